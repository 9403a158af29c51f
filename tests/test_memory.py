"""memory=: a task or actor that outgrows what it declared is killed by its node
and its caller gets OutOfMemoryError; a node short of memory takes no new work.
Real nodes, real allocations (a few hundred MiB)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

import redray
from redray.exceptions import ActorDiedError, OutOfMemoryError, RayTaskError
from redray.workers import memory as mem
from redray.workers import slots as sl

MiB = 1024 * 1024


@redray.remote(memory=150 * MiB, max_retries=3)
def hog(size_mib: int, runs_file: str) -> int:
    with open(runs_file, "a") as f:
        f.write("run\n")
    data = b"x" * (size_mib * MiB)
    time.sleep(15)  # long enough for the node to notice
    return len(data)


@redray.remote
def where() -> str:
    return redray.get_runtime_context().get_node_id()


@redray.remote(memory=150 * MiB)
class Hoarder:
    def __init__(self) -> None:
        self.kept: list[bytes] = []

    def grow(self, size_mib: int) -> int:
        self.kept.append(b"x" * (size_mib * MiB))
        time.sleep(15)
        return len(self.kept)

    def ping(self) -> str:
        return "pong"


def test_task_over_its_memory_is_killed_and_get_raises_out_of_memory_error(cluster, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(OutOfMemoryError) as info:
        redray.get(hog.remote(400, str(runs)), timeout=60)
    message = str(info.value)
    assert "hog" in message and "memory=150.0 MiB" in message
    assert runs.read_text().count("run") == 1  # not retried despite max_retries=3


def test_task_within_its_memory_runs(cluster, tmp_path):
    quick = hog.options(memory=600 * MiB)
    ref = quick.remote(50, str(tmp_path / "runs"))
    assert redray.get(ref, timeout=60) == 50 * MiB


def test_node_keeps_serving_after_killing_an_executor_for_memory(cluster, tmp_path):
    with pytest.raises(OutOfMemoryError):
        redray.get(hog.remote(400, str(tmp_path / "runs")), timeout=60)
    assert redray.get([where.remote() for _ in range(4)], timeout=30) == [cluster.node_id] * 4
    deadline = time.monotonic() + 10
    while redray.available_resources().get("memory", 0) < redray.cluster_resources()["memory"]:
        assert time.monotonic() < deadline, "the killed task's memory was not given back"
        time.sleep(0.05)


def test_actor_over_its_memory_dies_with_out_of_memory_error(cluster):
    actor = Hoarder.remote()
    assert redray.get(actor.ping.remote(), timeout=30) == "pong"
    with pytest.raises(OutOfMemoryError) as info:
        redray.get(actor.grow.remote(400), timeout=60)
    assert isinstance(info.value, ActorDiedError)
    assert "Hoarder" in str(info.value)
    with pytest.raises(ActorDiedError):
        redray.get(actor.ping.remote(), timeout=30)


def test_restarted_actor_fails_the_call_that_outgrew_its_memory(cluster):
    actor = Hoarder.options(max_restarts=1, max_task_retries=0).remote()
    with pytest.raises(OutOfMemoryError):
        redray.get(actor.grow.remote(400), timeout=60)
    assert redray.get(actor.ping.remote(), timeout=60) == "pong"  # the new incarnation


def test_node_short_of_memory_takes_no_work_and_another_node_does(node_factory, connect):
    node_factory(num_cpus=2, config={"min_free_memory": 10.0**15})  # never this much free
    connect()
    pending = where.remote()
    ready, _ = redray.wait([pending], timeout=1.5)
    assert ready == []
    healthy = node_factory(num_cpus=1)
    assert redray.get(pending, timeout=30) == healthy.node_id
    assert redray.get([where.remote() for _ in range(4)], timeout=30) == [healthy.node_id] * 4


def test_user_error_in_a_task_with_memory_is_not_out_of_memory(cluster):
    @redray.remote(memory=100 * MiB)
    def fails() -> None:
        raise KeyError("plain")

    with pytest.raises(RayTaskError) as info:
        redray.get(fails.remote(), timeout=30)
    assert not isinstance(info.value, OutOfMemoryError)


# -- the monitor's decisions (pure logic) ---------------------------------------------------


def test_floor_is_a_fraction_of_memory_or_bytes(monkeypatch):
    monkeypatch.setattr(mem.psutil, "virtual_memory", lambda: SimpleNamespace(total=1000))
    assert mem.floor_bytes(None) == 50
    assert mem.floor_bytes(0.2) == 200
    assert mem.floor_bytes(4096) == 4096
    with pytest.raises(ValueError, match="min_free_memory"):
        mem.floor_bytes(-1)


def test_monitor_pauses_below_the_floor_and_resumes_above(monkeypatch):
    available = [100]
    monkeypatch.setattr(
        mem.psutil, "virtual_memory", lambda: SimpleNamespace(available=available[0])
    )
    slots = sl.Slots(2)
    monitor = mem.MemoryMonitor(slots, floor=500)
    assert monitor.check_machine() is True and slots.paused()
    assert monitor.check_machine() is False  # no change, no log, no wake-up
    available[0] = 600
    assert monitor.check_machine() is True and not slots.paused()


def test_monitor_kills_only_executors_over_their_limit(monkeypatch):
    slots = sl.Slots(3)
    slots.set_memory_limit(0, 100)  # over
    slots.set_memory_limit(1, 1000)  # under
    # slot 2: no limit
    monitor = mem.MemoryMonitor(slots, floor=0)
    monkeypatch.setattr(monitor, "_unique_memory", lambda pid: 500)
    killed: list[int] = []
    monkeypatch.setattr(mem.os, "kill", lambda pid, sig: killed.append(pid))
    pids = {11: (0, "w0"), 12: (1, "w1"), 13: (2, "w2")}
    monitor.check_executors(pids)
    monitor.check_executors(pids)  # killed once, not again
    assert killed == [11]
    assert monitor.exited(11) == (500, 100)
    assert monitor.exited(12) is None


def test_slot_memory_limit_round_trips() -> None:
    slots = sl.Slots(2)
    slots.set_memory_limit(1, 300 * MiB)
    assert slots.memory_limit(1) == 300 * MiB and slots.memory_limit(0) == 0
