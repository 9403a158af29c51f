"""When an executor pokes its node agent (which sleeps until poked, or a
second): an in-process executor against a real server, its slots in memory
the test reads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from redray import task_spec as ts
from redray.constants import Keys
from redray.context import ActorContext
from redray.scripts import Claimed
from redray.settings import Settings
from workers import slots as sl
from workers.actor_runner import ActorRunner
from workers.executor import Executor

CPU1 = 10_000


@pytest.fixture
def executor(settings: Settings) -> Iterator[Executor]:
    keys = Keys()
    client = settings.client()
    client.hset(keys.node_avail("n1"), "CPU", 0)  # its CPU is held by the creation task
    client.hset(keys.node_running("n1"), "t1", f"w1 CPU={CPU1}; 0")
    client.hset(keys.actor("a1"), "state", "PENDING")
    client.close()
    ex = Executor(settings, "n1", "w1", {"CPU": 2 * CPU1})
    ex.slots = sl.Slots(2)
    ex.slot = 0
    try:
        yield ex
    finally:
        ex.runtime.close()
        os.close(ex.slots.wake_r)
        os.close(ex.slots.wake_w)


def _runner(ex: Executor) -> ActorRunner:
    spec = ts.TaskSpec(
        task_id="t1",
        job_id="0001",
        function_key="",
        function_digest="",
        function_name="Echo",
        args=b"",
        deps=(),
        num_returns=1,
        owner="driver-x",
        max_retries=0,
        retry_exceptions=False,
        extra={"actor": "a1", "release_cpu": CPU1},
    )
    runner = ActorRunner(ex, Claimed("t1", b"", f"CPU={CPU1};"), spec)
    runner.rt.current_actor = ActorContext(actor_id="a1", name="", namespace="", class_name="Echo")
    return runner


def _poked(slots: sl.Slots) -> bool:
    try:
        return bool(os.read(slots.wake_r, 16))
    except BlockingIOError:
        return False


def test_an_actor_that_gives_back_its_creation_cpu_pokes_its_agent(executor: Executor) -> None:
    # no idle executor: only a new one can start the next actor on the CPU given back
    executor.slots.set_state(0, sl.ACTOR)  # type: ignore[union-attr]
    assert _runner(executor)._ready({"CPU": CPU1}, [])
    assert _poked(executor.slots)  # type: ignore[arg-type]
    avail = executor.runtime.client.hget(Keys().node_avail("n1"), "CPU")
    assert int(avail) == CPU1


def test_an_actor_leaves_its_agent_asleep_while_another_executor_is_idle(
    executor: Executor,
) -> None:
    executor.slots.set_state(0, sl.ACTOR)  # type: ignore[union-attr]
    executor.slots.set_state(1, sl.IDLE)  # type: ignore[union-attr]
    assert _runner(executor)._ready({"CPU": CPU1}, [])
    assert not _poked(executor.slots)  # type: ignore[arg-type]
