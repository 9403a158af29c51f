"""How an idle executor hears of new work: an in-process executor against a
real server, with the idle slice (the fallback for a lost token) set longer
than the test's timeout, so only a token can wake it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from redray.constants import Keys
from redray.settings import Settings
from workers import executor as executor_module
from workers.executor import Executor

CPU1 = "CPU=10000"
JOB = "0001"


@pytest.fixture
def idle_executor(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Executor]:
    monkeypatch.setattr(executor_module, "IDLE_WAIT", 600.0)
    keys = Keys()
    client = settings.client()
    client.hset(keys.node_avail("n1"), "CPU", 20_000)
    client.hset(keys.nodes, "n1", "{}")
    client.sadd(keys.node_workers("n1"), "w1", "w2")
    client.close()
    ex = Executor(settings, "n1", "w1", {"CPU": 20_000})
    ex.refresh_shapes()
    try:
        yield ex
    finally:
        ex.runtime.close()


@pytest.mark.timeout(60)
def test_an_executor_that_missed_a_new_shape_while_busy_takes_its_task_when_idle(
    idle_executor: Executor,
) -> None:
    ex = idle_executor
    assert ex.shapes == []  # it read the shapes before the new one existed
    # a driver registers the shape and wakes the node's executors (Registry.check_shape);
    # w2, idle, would take a node-wide token and w1 would never hear of the shape
    new, nodes = ex.scripts.register_shape(CPU1)
    assert new and list(nodes) == [b"n1"]
    assert ex.scripts.wake_for_shape(["n1"]) == 2
    ex.scripts.submit(JOB, "driver-x", [(1, "t1", CPU1, b"spec", [])])
    claimed = ex._wait_for_work()
    assert claimed is not None and claimed.task_id == "t1"
    assert ex.shapes == [CPU1]


@pytest.mark.timeout(60)
def test_an_idle_executor_wakes_for_a_task_of_a_shape_it_knows(idle_executor: Executor) -> None:
    ex = idle_executor
    ex.scripts.register_shape(CPU1)
    ex.refresh_shapes()
    ex.scripts.submit(JOB, "driver-x", [(1, "t1", CPU1, b"spec", [])])
    claimed = ex._wait_for_work()
    assert claimed is not None and claimed.task_id == "t1"
