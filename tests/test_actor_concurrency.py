"""Actor concurrency: async actors, max_concurrency for async and threaded
actors, and max_pending_calls, against a real server and real worker processes.

Overlap is shown by what the actor records (start/end stamps taken inside it,
peak number of calls running at once, events one call sets for another),
never by timing the test itself."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest
from conftest import start_node

import redray
from redray.exceptions import PendingCallsLimitExceeded, RayTaskError
from redray.settings import Settings
from redray.util.queue import Queue


class AsyncBoom(Exception):
    pass


@redray.remote
class AsyncWorker:
    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.count = 0
        self.event = asyncio.Event()

    async def span(self, seconds: float) -> tuple[float, float]:
        start = time.monotonic()
        self.running += 1
        self.peak = max(self.peak, self.running)
        await asyncio.sleep(seconds)
        self.running -= 1
        return start, time.monotonic()

    def max_running(self) -> int:
        return self.peak

    async def increment(self) -> int:
        self.count += 1
        await asyncio.sleep(0)
        return self.count

    def get(self) -> int:
        return self.count

    async def fail(self) -> None:
        await asyncio.sleep(0)
        raise AsyncBoom("async method failed")

    async def wait_for_signal(self) -> str:
        await asyncio.wait_for(self.event.wait(), timeout=20)
        return "signalled"

    async def signal(self) -> str:
        self.event.set()
        return "sent"

    async def await_ref(self, refs: list) -> int:
        return await refs[0]

    async def call_other(self, other) -> int:
        return await other.increment.remote()


@redray.remote
class ThreadedWorker:
    def __init__(self, parties: int = 1) -> None:
        self.barrier = threading.Barrier(parties)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.event = threading.Event()

    def meet(self) -> int:
        return self.barrier.wait(timeout=20)

    def busy(self, seconds: float) -> str:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(seconds)
        with self.lock:
            self.running -= 1
        return threading.current_thread().name

    def max_running(self) -> int:
        return self.peak

    def wait_for_signal(self) -> str:
        return "signalled" if self.event.wait(timeout=20) else "timed out"

    def signal(self) -> str:
        self.event.set()
        return "sent"


@redray.remote
class Blocker:
    def block(self, release) -> str:
        return release.get(timeout=30)

    def ping(self) -> str:
        return "pong"


@redray.remote
def value_of(x: int) -> int:
    return x


def _wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def _cpus() -> float:
    return redray.available_resources().get("CPU", 0)


# -- fixtures: one node for the module (its own key prefix), a new driver per test ----------


class _SharedNode:
    """One 2-CPU node for the module, replaced when a test left it with CPUs held."""

    def __init__(self, redis_server) -> None:
        self.redis_server = redis_server
        self.node = self._start()

    def _start(self):
        settings = Settings(
            host=self.redis_server.host,
            port=self.redis_server.port,
            prefix="concurrency-" + uuid.uuid4().hex[:8],
        )
        return start_node(settings, num_cpus=2)

    def connect(self, **kwargs):
        redray.init(address=self.node.settings.to_url(), **kwargs)
        try:
            _wait_for(lambda: _cpus() == 2, timeout=2)
        except AssertionError:
            # an earlier test leaked a reservation (a redray bug another test reports):
            # do not let it spill over into this one
            redray.shutdown()
            self.node.stop()
            self.node = self._start()
            redray.init(address=self.node.settings.to_url(), **kwargs)
        return self.node


@pytest.fixture(scope="module")
def shared_node(redis_server):
    shared = _SharedNode(redis_server)
    yield shared
    shared.node.stop()


@pytest.fixture
def cluster(shared_node):
    node = shared_node.connect()
    yield node
    redray.shutdown()


# -- async actors -----------------------------------------------------------------------------


def test_async_actor_runs_its_calls_concurrently(cluster):
    worker = AsyncWorker.remote()
    spans = redray.get([worker.span.remote(0.5) for _ in range(10)], timeout=30)
    latest_start = max(start for start, _ in spans)
    earliest_end = min(end for _, end in spans)
    assert latest_start < earliest_end  # all ten were sleeping at the same time


def test_async_actor_has_all_calls_in_flight_at_once(cluster):
    worker = AsyncWorker.remote()
    redray.get([worker.span.remote(0.3) for _ in range(10)], timeout=30)
    assert redray.get(worker.max_running.remote()) == 10


def test_async_actor_call_waiting_on_a_later_call_completes(cluster):
    worker = AsyncWorker.remote()
    waiting = worker.wait_for_signal.remote()
    assert redray.get(worker.signal.remote(), timeout=20) == "sent"
    assert redray.get(waiting, timeout=20) == "signalled"


def test_async_actor_with_max_concurrency_one_serializes_calls(cluster):
    worker = AsyncWorker.options(max_concurrency=1).remote()
    spans = sorted(redray.get([worker.span.remote(0.1) for _ in range(4)], timeout=30))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(len(spans) - 1))
    assert redray.get(worker.max_running.remote()) == 1


def test_async_actor_max_concurrency_caps_calls_in_flight(cluster):
    worker = AsyncWorker.options(max_concurrency=3).remote()
    redray.get([worker.span.remote(0.2) for _ in range(9)], timeout=30)
    assert redray.get(worker.max_running.remote()) == 3


def test_async_actor_keeps_state_between_calls(cluster):
    worker = AsyncWorker.remote()
    redray.get([worker.increment.remote() for _ in range(5)], timeout=30)
    assert redray.get(worker.get.remote()) == 5


def test_async_actor_method_exception_fails_only_that_call(cluster):
    worker = AsyncWorker.remote()
    redray.get(worker.increment.remote())
    with pytest.raises(AsyncBoom, match="async method failed") as info:
        redray.get(worker.fail.remote(), timeout=20)
    assert isinstance(info.value, RayTaskError)
    assert redray.get(worker.increment.remote()) == 2


def test_async_actor_method_can_await_an_object_ref(cluster):
    worker = AsyncWorker.remote()
    assert redray.get(worker.await_ref.remote([value_of.remote(41)]), timeout=20) == 41


def test_async_actor_method_can_await_another_actor_call(cluster):
    caller, callee = AsyncWorker.remote(), AsyncWorker.remote()
    assert redray.get(caller.call_other.remote(callee), timeout=20) == 1
    assert redray.get(callee.get.remote()) == 1


# -- threaded actors --------------------------------------------------------------------------


def test_threaded_actor_runs_calls_on_max_concurrency_threads(cluster):
    meeting = ThreadedWorker.options(max_concurrency=4).remote(4)
    arrivals = redray.get([meeting.meet.remote() for _ in range(4)], timeout=30)
    assert sorted(arrivals) == [0, 1, 2, 3]  # all four waited at the barrier together


def test_threaded_actor_call_waiting_on_a_later_call_completes(cluster):
    worker = ThreadedWorker.options(max_concurrency=2).remote()
    waiting = worker.wait_for_signal.remote()
    assert redray.get(worker.signal.remote(), timeout=20) == "sent"
    assert redray.get(waiting, timeout=20) == "signalled"


def test_threaded_actor_never_runs_more_than_max_concurrency_calls(cluster):
    worker = ThreadedWorker.options(max_concurrency=4).remote()
    redray.get([worker.busy.remote(0.1) for _ in range(12)], timeout=30)
    assert 1 < redray.get(worker.max_running.remote()) <= 4


def test_sync_actor_runs_one_call_at_a_time(cluster):
    worker = ThreadedWorker.remote()
    names = redray.get([worker.busy.remote(0.05) for _ in range(6)], timeout=30)
    assert redray.get(worker.max_running.remote()) == 1
    assert len(set(names)) == 1


# -- max_pending_calls ------------------------------------------------------------------------


def test_max_pending_calls_raises_on_the_call_over_the_limit(cluster):
    blocker = Blocker.options(max_pending_calls=2).remote()
    release = Queue()
    pending = [blocker.block.remote(release), blocker.block.remote(release)]
    with pytest.raises(PendingCallsLimitExceeded):
        blocker.ping.remote()
    release.put_nowait_batch(["a", "b"])
    redray.get(pending, timeout=20)


def test_max_pending_calls_allows_calls_again_once_results_arrive(cluster):
    blocker = Blocker.options(max_pending_calls=2).remote()
    release = Queue()
    pending = [blocker.block.remote(release), blocker.block.remote(release)]
    with pytest.raises(PendingCallsLimitExceeded):
        blocker.ping.remote()
    release.put_nowait_batch(["a", "b"])
    assert redray.get(pending, timeout=20) == ["a", "b"]
    assert redray.get(blocker.ping.remote(), timeout=20) == "pong"


def test_max_pending_calls_error_is_a_ray_error():
    assert issubclass(PendingCallsLimitExceeded, redray.exceptions.RayError)
