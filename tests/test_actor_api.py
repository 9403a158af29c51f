"""Actors: creation, placement, ordering, handles, names, lifetime, failures,
concurrency and utilities, against real worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import worker_env

import redray
from redray.exceptions import (
    ActorDiedError,
    PendingCallsLimitExceeded,
    RayActorError,
    RayTaskError,
)
from redray.util import ActorPool
from redray.util.queue import Empty, Full, Queue


@redray.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.log: list[int] = []

    def increment(self) -> int:
        self.count += 1
        return self.count

    def get(self) -> int:
        return self.count

    def append(self, x: int) -> None:
        self.log.append(x)

    def history(self) -> list[int]:
        return self.log

    def pid(self) -> int:
        return os.getpid()

    def node(self) -> str:
        return redray.get_runtime_context().get_node_id()

    def ids(self) -> tuple[str | None, str | None]:
        ctx = redray.get_runtime_context()
        return ctx.get_actor_id(), ctx.get_actor_name()

    def gpus(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def fail(self) -> None:
        raise KeyError("broken method")

    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "awake"

    @redray.method(num_returns=2)
    def pair(self) -> tuple[int, int]:
        return self.count, -self.count


@redray.remote
class BrokenInit:
    def __init__(self) -> None:
        raise ZeroDivisionError("init failed")

    def ping(self) -> str:
        return "pong"


@redray.remote
class AsyncWorker:
    async def span(self, seconds: float) -> tuple[float, float]:
        start = time.monotonic()
        await asyncio.sleep(seconds)
        return start, time.monotonic()


@redray.remote
class Meeting:
    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties)

    def meet(self) -> bool:
        self.barrier.wait(timeout=20)
        return True


@redray.remote
class Doubler:
    def double(self, x: int) -> int:
        return 2 * x


@redray.remote
def bump(counter, times: int) -> None:
    for _ in range(times):
        counter.increment.remote()


@redray.remote
def read_through(counter) -> int:
    return redray.get(counter.get.remote())


@redray.remote
def make_counter():
    handle = Counter.remote(100)
    redray.get(handle.get.remote())
    return handle


@redray.remote
def lookup(name: str) -> int:
    return redray.get(redray.get_actor(name).get.remote())


@redray.remote
def slow_value(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


def _wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


# -- creation and calls -----------------------------------------------------------------


def test_actor_keeps_state_between_calls(cluster):
    counter = Counter.remote()
    assert redray.get(counter.get.remote()) == 0
    counter.increment.remote()
    assert redray.get(counter.get.remote()) == 1


def test_constructor_arguments(cluster):
    assert redray.get(Counter.remote(100).get.remote()) == 100


def test_instantiating_or_calling_directly_is_a_type_error(cluster):
    with pytest.raises(TypeError, match="remote"):
        Counter()
    counter = Counter.remote()
    with pytest.raises(TypeError, match="remote"):
        counter.get()


def test_unknown_method_is_an_attribute_error(cluster):
    handle = Counter.remote()
    with pytest.raises(AttributeError):
        getattr(handle, "no_such_method")  # noqa: B009


def test_bad_actor_options_are_value_errors():
    with pytest.raises(ValueError):
        Counter.options(foo=1)
    with pytest.raises(ValueError):
        Counter.options(lifetime="forever")
    with pytest.raises(ValueError):
        Counter.options(max_concurrency=0)


def test_method_num_returns(cluster):
    counter = Counter.remote(3)
    first, second = counter.pair.remote()
    assert redray.get([first, second]) == [3, -3]
    assert len(counter.increment.options(num_returns=1).remote().hex()) > 0


# -- placement --------------------------------------------------------------------------


def test_actor_with_num_cpus_holds_it_while_alive(cluster):
    actor = Counter.options(num_cpus=1).remote()
    redray.get(actor.get.remote())
    assert redray.available_resources().get("CPU", 0) == 1
    redray.kill(actor)
    _wait_for(lambda: redray.available_resources().get("CPU", 0) == 2)


def test_actor_without_resources_holds_none_while_alive(cluster):
    actor = Counter.remote()
    redray.get(actor.get.remote())
    _wait_for(lambda: redray.available_resources().get("CPU", 0) == 2)


def test_actor_lands_on_the_node_with_its_resource(settings, node_factory, connect):
    node_factory(num_cpus=1)
    special = node_factory(num_cpus=1, resources={"alpha": 1})
    connect()
    actor = Counter.options(resources={"alpha": 1}).remote()
    assert redray.get(actor.node.remote()) == special.node_id


def test_gpu_actor_sees_its_device(settings, node_factory, connect):
    node_factory(num_cpus=1, num_gpus=1, env={"CUDA_VISIBLE_DEVICES": "2"})
    connect()
    actor = Counter.options(num_gpus=1).remote()
    assert redray.get(actor.gpus.remote()) == "2"


# -- ordering ---------------------------------------------------------------------------


def test_calls_from_one_caller_run_in_order(cluster):
    counter = Counter.remote()
    for i in range(200):
        counter.append.remote(i)
    assert redray.get(counter.history.remote()) == list(range(200))


def test_call_waiting_on_an_unready_argument_still_runs_first(cluster):
    counter = Counter.remote()
    counter.append.remote(slow_value.remote(1.0, 0))
    counter.append.remote(1)
    assert redray.get(counter.history.remote()) == [0, 1]


def test_calls_made_in_a_task_are_queued_before_its_result(cluster):
    counter = Counter.remote()
    redray.get(bump.remote(counter, 10))
    assert redray.get(counter.get.remote()) == 10


# -- handles and names ------------------------------------------------------------------


def test_handle_passed_to_a_task(cluster):
    counter = Counter.remote(7)
    assert redray.get(read_through.remote(counter)) == 7


def test_handle_returned_from_a_task(cluster):
    handle = redray.get(make_counter.remote())
    assert redray.get(handle.increment.remote()) == 101


def test_named_actor_found_by_name_also_from_a_task(cluster):
    Counter.options(name="shared").remote(5)
    assert redray.get(redray.get_actor("shared").get.remote()) == 5
    assert redray.get(lookup.remote("shared")) == 5


def test_get_actor_of_a_missing_name_is_a_value_error(cluster):
    with pytest.raises(ValueError):
        redray.get_actor("nobody")


def test_names_are_unique_per_namespace(cluster):
    Counter.options(name="only").remote(1)
    with pytest.raises(ValueError):
        Counter.options(name="only").remote(2)
    same = Counter.options(name="only", get_if_exists=True).remote(3)
    assert redray.get(same.get.remote()) == 1
    other = Counter.options(name="only", namespace="elsewhere").remote(4)
    assert redray.get(other.get.remote()) == 4
    assert redray.get(redray.get_actor("only", namespace="elsewhere").get.remote()) == 4


# -- lifetime ---------------------------------------------------------------------------

DETACHED_CREATOR = """
import sys, redray
sys.path.insert(0, sys.argv[2])
from test_actor_api import Counter
redray.init(address=sys.argv[1], namespace="ns")
c = Counter.options(name="keeper", lifetime="detached").remote(41)
redray.get(c.increment.remote())
redray.get(Counter.options(name="ephemeral").remote().get.remote())
redray.shutdown()
"""


def test_detached_actor_outlives_its_driver_and_ephemeral_does_not(settings, node_factory):
    node_factory(num_cpus=2)
    tests_dir = os.path.dirname(__file__)
    done = subprocess.run(
        [sys.executable, "-c", DETACHED_CREATOR, settings.to_url(), tests_dir],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    redray.init(address=settings.to_url(), namespace="ns")
    keeper = redray.get_actor("keeper")
    assert redray.get(keeper.get.remote()) == 42
    with pytest.raises(ValueError):
        redray.get_actor("ephemeral")
    redray.kill(keeper)
    with pytest.raises(ActorDiedError):
        redray.get(keeper.get.remote(), timeout=20)


def test_kill_makes_later_calls_raise_actor_died(cluster):
    counter = Counter.remote()
    redray.get(counter.get.remote())
    redray.kill(counter)
    with pytest.raises(ActorDiedError) as info:
        redray.get(counter.get.remote(), timeout=20)
    assert isinstance(info.value, RayActorError)


def test_ray_terminate_runs_after_queued_calls(cluster):
    counter = Counter.remote()
    queued = [counter.increment.remote() for _ in range(5)]
    counter.__ray_terminate__.remote()
    assert redray.get(queued) == [1, 2, 3, 4, 5]
    with pytest.raises(ActorDiedError):
        redray.get(counter.get.remote(), timeout=20)


# -- failures ---------------------------------------------------------------------------


def test_method_error_fails_only_that_call(cluster):
    counter = Counter.remote()
    counter.increment.remote()
    with pytest.raises(KeyError) as info:
        redray.get(counter.fail.remote())
    assert isinstance(info.value, RayTaskError)
    assert redray.get(counter.get.remote()) == 1


def test_init_error_makes_every_call_raise_actor_died_with_the_cause(cluster):
    broken = BrokenInit.remote()
    with pytest.raises(ActorDiedError, match="init failed"):
        redray.get(broken.ping.remote(), timeout=20)
    with pytest.raises(ActorDiedError):
        redray.get(broken.ping.remote(), timeout=20)


def _restarted(actor_id: str, old_pid: int) -> bool:
    for info in redray.util.state.list_actors():
        if info["actor_id"] == actor_id:
            return info["state"] == "ALIVE" and info["pid"] not in (None, old_pid)
    return False


def test_killed_process_is_restarted_with_fresh_state(cluster):
    counter = Counter.options(max_restarts=1).remote()
    counter.increment.remote()
    pid = redray.get(counter.pid.remote())
    os.kill(pid, signal.SIGKILL)
    # (a call sent before the restart is noticed counts as in flight, as in Ray)
    _wait_for(lambda: _restarted(counter._actor_id, pid), timeout=30)
    assert redray.get(counter.increment.remote(), timeout=30) == 1
    assert redray.get(counter.pid.remote()) != pid


def test_without_restarts_a_killed_process_means_actor_died(cluster):
    counter = Counter.remote()
    os.kill(redray.get(counter.pid.remote()), signal.SIGKILL)
    with pytest.raises(ActorDiedError):
        redray.get(counter.get.remote(), timeout=30)


def test_call_in_flight_is_retried_with_max_task_retries(cluster):
    counter = Counter.options(max_restarts=1, max_task_retries=1).remote()
    pid = redray.get(counter.pid.remote())
    ref = counter.nap.remote(2.0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    assert redray.get(ref, timeout=30) == "awake"


def test_call_in_flight_fails_without_task_retries(cluster):
    counter = Counter.options(max_restarts=1).remote()
    pid = redray.get(counter.pid.remote())
    ref = counter.nap.remote(2.0)
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RayActorError):
        redray.get(ref, timeout=30)
    assert redray.get(counter.get.remote(), timeout=30) == 0


# -- concurrency ------------------------------------------------------------------------


def test_async_actor_runs_calls_concurrently(cluster):
    worker = AsyncWorker.remote()
    spans = redray.get([worker.span.remote(0.5) for _ in range(10)], timeout=30)
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end  # all ten were sleeping at the same time


def test_async_actor_with_max_concurrency_one_serializes(cluster):
    worker = AsyncWorker.options(max_concurrency=1).remote()
    spans = sorted(redray.get([worker.span.remote(0.2) for _ in range(3)], timeout=30))
    assert all(spans[i][1] <= spans[i + 1][0] for i in range(2))


def test_threaded_actor_runs_calls_on_several_threads(cluster):
    meeting = Meeting.options(max_concurrency=4).remote(4)
    assert redray.get([meeting.meet.remote() for _ in range(4)], timeout=30) == [True] * 4


def test_max_pending_calls_limits_queued_calls(cluster):
    counter = Counter.options(max_pending_calls=2).remote()
    counter.nap.remote(1.0)
    counter.nap.remote(1.0)
    with pytest.raises(PendingCallsLimitExceeded):
        counter.nap.remote(1.0)


# -- context and utilities --------------------------------------------------------------


def test_runtime_context_inside_an_actor(cluster):
    actor = Counter.options(name="introspective").remote()
    actor_id, name = redray.get(actor.ids.remote())
    assert actor_id == actor._actor_id and name == "introspective"
    (listed,) = [a for a in redray.util.state.list_actors() if a["actor_id"] == actor_id]
    assert listed["state"] == "ALIVE" and listed["node_id"] == cluster.node_id


def test_actor_pool_map_keeps_order_and_unordered_gets_all(cluster):
    pool = ActorPool([Doubler.remote(), Doubler.remote()])
    assert list(pool.map(lambda a, v: a.double.remote(v), range(6))) == [0, 2, 4, 6, 8, 10]
    assert sorted(pool.map_unordered(lambda a, v: a.double.remote(v), range(4))) == [0, 2, 4, 6]


def test_actor_pool_submit_and_get_next(cluster):
    pool = ActorPool([Doubler.remote()])
    pool.submit(lambda a, v: a.double.remote(v), 1)
    pool.submit(lambda a, v: a.double.remote(v), 2)
    assert pool.has_next()
    assert pool.get_next() == 2
    assert pool.get_next_unordered() == 4
    assert not pool.has_next()


def test_queue_put_get_with_blocking_and_timeouts(cluster):
    q = Queue(maxsize=2)
    q.put(1)
    q.put_nowait(2)
    assert q.full() and q.size() == 2
    with pytest.raises(Full):
        q.put(3, timeout=0.2)
    assert q.get() == 1 and q.get_nowait() == 2
    assert q.empty()
    with pytest.raises(Empty):
        q.get(timeout=0.2)
    with pytest.raises(Empty):
        q.get_nowait()


@redray.remote
def consume(q, n: int) -> list[int]:
    return [q.get(timeout=20) for _ in range(n)]


def test_queue_passed_to_a_task(cluster):
    q = Queue()
    ref = consume.remote(q, 3)
    q.put_nowait_batch([1, 2, 3])
    assert redray.get(ref, timeout=30) == [1, 2, 3]
    q.put_nowait_batch([4, 5])
    assert q.get_nowait_batch(2) == [4, 5]
