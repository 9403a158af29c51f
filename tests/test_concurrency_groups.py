"""Ray's concurrency groups: each group of a threaded or async actor runs its
calls apart from the others', up to its own max concurrency.

Independence is shown by a call that completes while another group's call is
held (an event the test releases), never by timing the test."""

from __future__ import annotations

import threading
import time

import pytest

import redray


@redray.remote(concurrency_groups={"io": 2, "compute": 1})
class Grouped:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.gate = threading.Event()

    def _run(self, group: str, seconds: float) -> str:
        with self.lock:
            self.active[group] = self.active.get(group, 0) + 1
            self.peak[group] = max(self.peak.get(group, 0), self.active[group])
        time.sleep(seconds)
        with self.lock:
            self.active[group] -= 1
        return group

    @redray.method(concurrency_group="io")
    def io(self, seconds: float) -> str:
        return self._run("io", seconds)

    @redray.method(concurrency_group="io")
    def io_held(self) -> str:
        self.gate.wait(30)
        return "io released"

    @redray.method(concurrency_group="compute")
    def compute(self) -> str:
        return "computed"

    def held(self) -> str:
        self.gate.wait(30)
        return "default released"

    def default(self) -> str:
        return "default"

    @redray.method(concurrency_group="compute")
    def release(self) -> None:
        self.gate.set()

    @redray.method(concurrency_group="compute")
    def peaks(self) -> dict[str, int]:
        return self.peak


def test_a_call_in_one_group_completes_while_another_groups_calls_are_held(cluster) -> None:
    actor = Grouped.remote()
    held = [actor.io_held.remote(), actor.io_held.remote(), actor.held.remote()]
    # io (2 threads) and the default group (1 thread) are all held
    assert redray.get(actor.compute.remote(), timeout=30) == "computed"
    ready, _ = redray.wait(held, num_returns=3, timeout=0.5)
    assert ready == []
    actor.release.remote()
    assert redray.get(held, timeout=30) == ["io released", "io released", "default released"]


def test_a_group_runs_up_to_its_own_max_concurrency(cluster) -> None:
    actor = Grouped.remote()
    redray.get([actor.io.remote(0.3) for _ in range(6)], timeout=30)
    assert redray.get(actor.peaks.remote(), timeout=30)["io"] == 2


def test_options_concurrency_group_runs_one_call_in_that_group(cluster) -> None:
    actor = Grouped.remote()
    held = actor.held.remote()  # the default group's one thread is busy
    ref = actor.default.options(concurrency_group="compute").remote()
    assert redray.get(ref, timeout=30) == "default"
    actor.release.remote()
    assert redray.get(held, timeout=30) == "default released"


@redray.remote(concurrency_groups={"io": 1})
class AsyncGrouped:
    def __init__(self) -> None:
        self.gate = threading.Event()

    @redray.method(concurrency_group="io")
    async def blocks_its_loop(self) -> str:
        self.gate.wait(30)  # not awaited: the io group's event loop is stuck
        return "io released"

    async def fast(self) -> str:
        return "fast"

    async def release(self) -> None:
        self.gate.set()


def test_each_group_of_an_async_actor_has_its_own_event_loop(cluster) -> None:
    actor = AsyncGrouped.remote()
    redray.get(actor.fast.remote(), timeout=30)
    held = actor.blocks_its_loop.remote()
    assert redray.get(actor.fast.remote(), timeout=30) == "fast"
    actor.release.remote()
    assert redray.get(held, timeout=30) == "io released"


def test_a_method_in_a_group_the_actor_lacks_is_a_value_error_at_creation(cluster) -> None:
    @redray.remote(concurrency_groups={"io": 2})
    class Misnamed:
        @redray.method(concurrency_group="ioo")
        def f(self) -> int:
            return 1

    with pytest.raises(ValueError, match="ioo"):
        Misnamed.remote()


def test_options_with_a_group_the_actor_lacks_is_a_value_error(cluster) -> None:
    actor = Grouped.remote()
    with pytest.raises(ValueError, match="nope"):
        actor.default.options(concurrency_group="nope")


def test_concurrency_groups_must_be_sizes_of_at_least_one() -> None:
    with pytest.raises(ValueError, match="concurrency_groups"):

        @redray.remote(concurrency_groups={"io": 0})
        class Zero:
            pass


@redray.remote(max_concurrency=8)
class Threaded:
    def task_id_stays_its_own(self) -> bool:
        mine = redray.get_runtime_context().get_task_id()
        time.sleep(0.02)  # other calls start on other threads meanwhile
        return redray.get_runtime_context().get_task_id() == mine


def test_each_thread_of_a_threaded_actor_sees_its_own_calls_task_id(cluster) -> None:
    actor = Threaded.remote()
    assert all(redray.get([actor.task_id_stays_its_own.remote() for _ in range(32)], timeout=60))


@redray.remote
def square(x: int) -> int:
    return x * x


@redray.remote(max_concurrency=4)
class Caller:
    def via_task(self, x: int) -> int:
        return redray.get(square.remote(x), timeout=60)


def test_many_driver_threads_calling_a_threaded_actor_that_waits_on_tasks(cluster) -> None:
    actor = Caller.remote()
    results: list[int] = []
    errors: list[BaseException] = []

    def call(start: int) -> None:
        try:
            for x in range(start, start + 20):
                results.append(redray.get(actor.via_task.remote(x), timeout=60))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(100 * i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert sorted(results) == sorted(x * x for i in range(8) for x in range(100 * i, 100 * i + 20))
