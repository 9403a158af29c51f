"""Per-method actor options as Ray takes them: ``@ray.method(max_task_retries=,
retry_exceptions=)`` and the same through ``handle.method.options()``.

The expected call counts are Ray 2.60's, measured with the same classes."""

from __future__ import annotations

import os
import signal

import pytest

import redray
from redray.exceptions import ActorDiedError
from redray.util.queue import Queue


@redray.remote(max_task_retries=2)
class Flaky:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _count(self, key: str) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1

    @redray.method(retry_exceptions=True)
    def retried(self, key: str) -> None:
        self._count(key)
        raise ValueError(key)

    def plain(self, key: str) -> None:
        self._count(key)
        raise ValueError(key)

    @redray.method(max_task_retries=1, retry_exceptions=[KeyError])
    def only_key_errors(self, key: str, exc: type[Exception]) -> None:
        self._count(key)
        raise exc(key)

    def settles(self, key: str, fail_times: int) -> int:
        self._count(key)
        if self.calls[key] <= fail_times:
            raise ValueError(key)
        return self.calls[key]

    def count(self, key: str) -> int:
        return self.calls.get(key, 0)


def calls_after(actor, ref, key: str) -> int:
    with pytest.raises(redray.exceptions.RayTaskError):
        redray.get(ref, timeout=30)
    return redray.get(actor.count.remote(key), timeout=30)


def test_a_method_with_retry_exceptions_runs_one_plus_the_actors_max_task_retries(
    cluster,
) -> None:
    actor = Flaky.remote()
    assert calls_after(actor, actor.retried.remote("a"), "a") == 3


def test_a_method_without_retry_exceptions_runs_once(cluster) -> None:
    actor = Flaky.remote()
    assert calls_after(actor, actor.plain.remote("b"), "b") == 1


def test_method_options_turn_on_retry_exceptions_for_one_call(cluster) -> None:
    actor = Flaky.remote()
    ref = actor.plain.options(retry_exceptions=True).remote("c")
    assert calls_after(actor, ref, "c") == 3
    ref = actor.plain.options(retry_exceptions=True, max_task_retries=1).remote("d")
    assert calls_after(actor, ref, "d") == 2
    ref = actor.plain.options(retry_exceptions=True, max_task_retries=0).remote("e")
    assert calls_after(actor, ref, "e") == 1


def test_retry_exceptions_as_a_list_retries_only_those_classes(cluster) -> None:
    actor = Flaky.remote()
    assert calls_after(actor, actor.only_key_errors.remote("k", KeyError), "k") == 2
    assert calls_after(actor, actor.only_key_errors.remote("v", ValueError), "v") == 1


def test_a_retried_method_that_then_succeeds_returns_its_value(cluster) -> None:
    actor = Flaky.remote()
    ref = actor.settles.options(retry_exceptions=True).remote("s", 2)
    assert redray.get(ref, timeout=30) == 3


@redray.remote
class NoActorRetries:
    def __init__(self) -> None:
        self.n = 0

    @redray.method(retry_exceptions=True)
    def fails(self) -> None:
        self.n += 1
        raise ValueError("fails")

    def count(self) -> int:
        return self.n


def test_method_max_task_retries_overrides_the_actors_default_of_zero(cluster) -> None:
    actor = NoActorRetries.remote()
    with pytest.raises(ValueError):
        redray.get(actor.fails.remote(), timeout=30)
    assert redray.get(actor.count.remote(), timeout=30) == 1
    with pytest.raises(ValueError):
        redray.get(actor.fails.options(max_task_retries=3).remote(), timeout=30)
    assert redray.get(actor.count.remote(), timeout=30) == 5


@redray.remote
class Async:
    def __init__(self) -> None:
        self.n = 0

    @redray.method(max_task_retries=2, retry_exceptions=True)
    async def fails(self) -> None:
        self.n += 1
        raise ValueError("fails")

    async def count(self) -> int:
        return self.n


def test_async_actor_methods_are_retried_too(cluster) -> None:
    actor = Async.remote()
    with pytest.raises(ValueError):
        redray.get(actor.fails.remote(), timeout=30)
    assert redray.get(actor.count.remote(), timeout=30) == 3


def test_bad_retry_options_on_a_method_are_a_clear_value_error(cluster) -> None:
    actor = Flaky.remote()
    with pytest.raises(ValueError, match="max_task_retries"):
        actor.plain.options(max_task_retries=-2)
    with pytest.raises(ValueError, match="retry_exceptions"):
        actor.plain.options(retry_exceptions=["not a class"])
    with pytest.raises(ValueError, match="retry_exceptions"):

        @redray.remote
        class Bad:
            @redray.method(retry_exceptions=3)
            def f(self) -> None: ...


@redray.remote(max_restarts=2)
class Blocker:
    def block(self, started: Queue, release: Queue) -> str:
        started.put(os.getpid())
        return release.get(timeout=30)

    @redray.method(max_task_retries=1)
    def block_retried(self, started: Queue, release: Queue) -> str:
        started.put(os.getpid())
        return release.get(timeout=30)


def test_a_call_with_max_task_retries_in_its_options_is_run_again_after_a_crash(cluster) -> None:
    actor = Blocker.remote()
    started, release = Queue(), Queue()
    ref = actor.block.options(max_task_retries=1).remote(started, release)
    first = started.get(timeout=20)
    os.kill(first, signal.SIGKILL)
    assert started.get(timeout=30) != first  # run again by the restarted actor
    release.put("released")
    assert redray.get(ref, timeout=30) == "released"


def test_a_methods_own_max_task_retries_covers_crashes(cluster) -> None:
    actor = Blocker.remote()
    started, release = Queue(), Queue()
    ref = actor.block_retried.remote(started, release)
    os.kill(started.get(timeout=20), signal.SIGKILL)
    second = started.get(timeout=30)
    os.kill(second, signal.SIGKILL)  # the one retry is spent
    with pytest.raises(ActorDiedError, match="max_task_retries=1"):
        redray.get(ref, timeout=30)
