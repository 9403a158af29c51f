"""Generator tasks: streaming, errors in order, dynamic returns, actor methods."""

from __future__ import annotations

import asyncio
import time

import pytest

import redray


@redray.remote
def count_slowly(n: int, pause: float):
    for i in range(n):
        time.sleep(pause)
        yield i


@redray.remote
def fail_after(n: int):
    yield from range(n)
    raise ValueError("generator broke")


@redray.remote(num_returns="dynamic")
def dynamic(n: int):
    for i in range(n):
        yield i * 10


@redray.remote(num_returns=2)
def two_values():
    yield "a"
    yield "b"


@redray.remote
class Streamer:
    def numbers(self, n: int):
        yield from range(n)


@redray.remote
class AsyncStreamer:
    async def numbers(self, n: int):
        for i in range(n):
            await asyncio.sleep(0.01)
            yield i


def test_generator_returns_an_object_ref_generator(cluster):
    gen = count_slowly.remote(3, 0)
    assert isinstance(gen, redray.ObjectRefGenerator)
    assert [redray.get(ref) for ref in gen] == [0, 1, 2]


def test_each_value_is_available_before_the_generator_ends(cluster):
    gen = count_slowly.remote(3, 2.0)
    first = next(gen)
    assert redray.get(first) == 0
    # the task is still producing: its end record is not there yet
    ready, _ = redray.wait([gen.completed()], timeout=0)
    assert ready == []


def test_cancel_of_a_generator_ends_it_with_task_cancelled_error(cluster):
    # as measured on Ray 2.60: the yielded refs keep their values, next() raises
    gen = count_slowly.remote(100, 0.2)
    first = next(gen)
    assert redray.get(first, timeout=30) == 0
    redray.cancel(gen)
    with pytest.raises(redray.exceptions.TaskCancelledError):
        for ref in gen:
            redray.get(ref, timeout=30)
    assert redray.get(first, timeout=30) == 0


def test_exception_arrives_after_the_values_before_it(cluster):
    seen = []
    for ref in fail_after.remote(2):
        try:
            seen.append(redray.get(ref))
        except ValueError:
            seen.append("error")
    assert seen == [0, 1, "error"]


def test_wait_on_a_generator_reports_its_next_value(cluster):
    gen = count_slowly.remote(2, 0)
    ready, _ = redray.wait([gen], timeout=20)
    assert ready == [gen]
    assert redray.get(next(gen)) == 0


def test_completed_resolves_when_the_generator_ends(cluster):
    gen = count_slowly.remote(3, 0)
    redray.get(gen.completed(), timeout=20)
    assert [redray.get(r) for r in gen] == [0, 1, 2]


def test_async_for_over_a_generator(cluster):
    async def collect():
        return [await ref async for ref in count_slowly.remote(3, 0)]

    assert asyncio.run(collect()) == [0, 1, 2]


def test_dynamic_returns_a_ref_to_the_refs(cluster):
    refs = redray.get(dynamic.remote(3))
    assert [redray.get(r) for r in refs] == [0, 10, 20]


def test_generator_with_fixed_num_returns(cluster):
    first, second = two_values.remote()
    assert redray.get([first, second]) == ["a", "b"]


def test_actor_generator_method_streams(cluster):
    actor = Streamer.remote()
    assert [redray.get(r) for r in actor.numbers.remote(4)] == [0, 1, 2, 3]


def test_async_actor_generator_method_streams(cluster):
    actor = AsyncStreamer.remote()
    assert [redray.get(r) for r in actor.numbers.remote(3)] == [0, 1, 2]


def test_bad_num_returns_is_a_value_error():
    with pytest.raises(ValueError):
        redray.remote(num_returns="sometimes")(lambda: 1)


def outcomes(refs) -> list:
    seen = []
    for ref in refs:
        try:
            seen.append(redray.get(ref, timeout=30))
        except redray.exceptions.RayTaskError as exc:
            seen.append(type(exc.cause).__name__)
    return seen


@redray.remote(num_returns=3)
def yields_one_then_fails():
    yield 1
    raise KeyError("after one")


@redray.remote(num_returns=3)
def yields_one_only():
    yield 1


@redray.remote(num_returns=2)
def yields_three():
    yield 1
    yield 2
    yield 3


@redray.remote(num_returns="dynamic")
def dynamic_then_fails():
    yield 1
    yield 2
    raise KeyError("after two")


@redray.remote(num_returns=None)
def default_generator():
    yield 1
    yield 2


@redray.remote
class KGenerator:
    @redray.method(num_returns=3)
    def values(self):
        yield "a"
        raise KeyError("after a")


def test_a_generator_with_num_returns_k_keeps_the_values_before_its_error(cluster):
    assert outcomes(yields_one_then_fails.remote()) == [1, "KeyError", "KeyError"]


def test_a_generator_that_yields_fewer_than_num_returns_keeps_what_it_yielded(cluster):
    with pytest.raises(ValueError, match="returned 1 objects, but num_returns=3"):
        redray.get(yields_one_only.remote()[2], timeout=30)
    assert outcomes(yields_one_only.remote()) == [1, "ValueError", "ValueError"]


def test_a_generator_that_yields_more_than_num_returns_gives_the_first_k(cluster):
    assert outcomes(yields_three.remote()) == [1, 2]


def test_a_dynamic_generator_keeps_its_values_and_ends_with_the_error(cluster):
    refs = redray.get(dynamic_then_fails.remote(), timeout=30)
    assert outcomes(refs) == [1, 2, "KeyError"]


def test_num_returns_none_on_a_generator_streams(cluster):
    gen = default_generator.remote()
    assert isinstance(gen, redray.ObjectRefGenerator)
    assert outcomes(gen) == [1, 2]


def test_num_returns_none_on_a_function_returns_one_ref(cluster):
    @redray.remote
    def five() -> int:
        return 5

    ref = five.options(num_returns=None).remote()
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref, timeout=30) == 5


def test_an_actor_generator_method_with_num_returns_k_keeps_the_values_before_its_error(
    cluster,
):
    actor = KGenerator.remote()
    assert outcomes(actor.values.remote()) == ["a", "KeyError", "KeyError"]
