"""Fault injection against real processes: an executor, a whole node, the Redis
server, a driver, each killed with SIGKILL in the middle of a workload, and
garbage poured into the streams while it runs.

Each test proves the delivery guarantee: every task runs at least once (the
runs are logged in files, outside Redis), every result arrives exactly once
(the driver counts the completion notices it is sent per object), and the
cluster's keys return to their baseline once the jobs are over.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
from conftest import assert_back_to_baseline, cluster_keys, start_node, wait_for, worker_env
from test_redis_restart import Tally

import redray
from redray.constants import Keys
from redray.inbox import Inbox
from redray.settings import Settings


@redray.remote
def work(i: int, log_dir: str, seconds: float) -> int:
    """Log this run (with the pid, so a test can kill it), sleep, return 10 i."""
    with open(os.path.join(log_dir, "runs"), "a") as f:
        f.write(f"{i} {os.getpid()} {redray.get_runtime_context().get_node_id()}\n")
    time.sleep(seconds)
    return 10 * i


# -- the proof's instruments -----------------------------------------------------------------


class Ledger:
    """Completion notices this driver received, per object id."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.notices: collections.Counter[str] = collections.Counter()
        handle = Inbox.handle

        def counting(inbox: Inbox, raw: bytes) -> str | None:
            oid = handle(inbox, raw)
            if oid is not None:
                self.notices[oid] += 1
            return oid

        monkeypatch.setattr(Inbox, "handle", counting)

    def assert_announced_at_most_once(self, refs: list) -> None:
        """No result was announced twice. (A notice whose pop reply was lost,
        as when the server is killed just after the pop, is never seen: the
        waiter re-checks the object instead, so at most once is the check.)"""
        counts = {ref.hex(): self.notices[ref.hex()] for ref in refs}
        assert {oid: n for oid, n in counts.items() if n > 1} == {}


@pytest.fixture
def ledger(monkeypatch) -> Ledger:
    return Ledger(monkeypatch)


def runs(log_dir: Path) -> list[tuple[int, int, str]]:
    path = log_dir / "runs"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        i, pid, node = line.split()
        out.append((int(i), int(pid), node))
    return out


def every_task_ran(log_dir: Path, n: int) -> collections.Counter[int]:
    counts = collections.Counter(i for i, _, _ in runs(log_dir))
    assert set(counts) == set(range(n)), "a task never ran"
    return counts


# -- an executor killed mid-task --------------------------------------------------------------


def test_executor_killed_mid_task_every_result_arrives_exactly_once(
    settings, node_factory, redis_client, ledger, tmp_path
):
    node_factory(num_cpus=2)
    keys = Keys(settings.prefix)
    baseline = cluster_keys(redis_client, keys)
    redray.init(address=settings.to_url())
    refs = [work.remote(i, str(tmp_path), 0.3) for i in range(12)]
    victims = []
    for target in (2, 5):
        wait_for(lambda t=target: any(i == t for i, _, _ in runs(tmp_path)), 30, what="task start")
        pid = next(pid for i, pid, _ in runs(tmp_path) if i == target)
        os.kill(pid, signal.SIGKILL)
        victims.append(target)
    assert redray.get(refs, timeout=60) == [10 * i for i in range(12)]
    ledger.assert_announced_at_most_once(refs)
    counts = every_task_ran(tmp_path, 12)
    assert all(counts[v] >= 2 for v in victims)  # re-run after the kill
    redray.shutdown()
    assert_back_to_baseline(redis_client, keys, baseline)


# -- a whole node killed mid-workload -----------------------------------------------------------


def test_node_killed_mid_workload_another_node_finishes_everything_exactly_once(
    settings, node_factory, redis_client, ledger, tmp_path
):
    fast = {"node_timeout": 2.0}
    doomed = node_factory(num_cpus=2, config=fast)
    survivor = node_factory(num_cpus=2, config=fast)
    keys = Keys(settings.prefix)
    baseline = cluster_keys(redis_client, keys)
    redray.init(address=settings.to_url())
    tally = Tally.options(max_restarts=-1, max_task_retries=-1).remote()
    refs = [work.remote(i, str(tmp_path), 0.2) for i in range(30)]
    wait_for(lambda: any(node == doomed.node_id for _, _, node in runs(tmp_path)), 30)
    doomed.kill()  # the agent and all its executors, at once
    assert redray.get(refs, timeout=90) == [10 * i for i in range(30)]
    ledger.assert_announced_at_most_once(refs)
    every_task_ran(tmp_path, 30)
    last_runs = {i: node for i, _, node in runs(tmp_path)}
    assert survivor.node_id in last_runs.values()
    # the actor (wherever it lived) still serves
    assert redray.get(tally.add.remote(1), timeout=60) == 1
    redray.shutdown()
    assert_back_to_baseline(redis_client, keys, baseline, gone_nodes=[doomed.node_id])


# -- the Redis server killed and restarted mid-workload -----------------------------------------


def test_redis_killed_and_restarted_mid_workload_loses_and_duplicates_nothing(
    persistent, ledger, tmp_path
):
    settings = Settings(host="127.0.0.1", port=persistent.port)
    keys = Keys(settings.prefix)
    node = start_node(settings, num_cpus=2)
    try:
        client = settings.client()
        baseline = cluster_keys(client, keys)
        redray.init(address=settings.to_url())
        tally = Tally.remote()
        refs = [work.remote(i, str(tmp_path), 0.05) for i in range(60)]
        calls = [tally.add.remote(1) for _ in range(20)]
        assert redray.get(refs[0], timeout=30) == 0
        persistent.kill()
        time.sleep(1.0)
        persistent.start()
        assert redray.get(refs, timeout=120) == [10 * i for i in range(60)]
        # an actor call is never run twice: its count goes up by one per call
        assert redray.get(calls, timeout=120) == list(range(1, 21))
        ledger.assert_announced_at_most_once(refs + calls)
        every_task_ran(tmp_path, 60)
        redray.shutdown()
        assert_back_to_baseline(client, keys, baseline)
        client.close()
    finally:
        node.stop()


# -- a driver killed mid-workload ---------------------------------------------------------------

DOOMED_DRIVER = """
import os, signal, sys, time
import redray

@redray.remote
def spin(i):
    time.sleep(0.2)
    return i

redray.init(address=sys.argv[1])
refs = [spin.remote(i) for i in range(40)]
kept = redray.put(b"x" * 300_000)
assert redray.get(refs[0], timeout=30) == 0
print("running", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_driver_is_cleaned_up_while_another_drivers_work_completes_exactly_once(
    settings, node_factory, redis_client, ledger, tmp_path
):
    node_factory(num_cpus=2, config={"job_timeout": 2.0})
    keys = Keys(settings.prefix)
    baseline = cluster_keys(redis_client, keys)
    redray.init(address=settings.to_url())
    refs = [work.remote(i, str(tmp_path), 0.05) for i in range(30)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = subprocess.run(
            [sys.executable, "-c", DOOMED_DRIVER, settings.to_url()],
            capture_output=True,
            text=True,
            timeout=90,
            env=worker_env(),
        )
    assert done.returncode == -signal.SIGKILL and "running" in done.stdout, done.stderr
    assert redray.get(refs, timeout=90) == [10 * i for i in range(30)]
    ledger.assert_announced_at_most_once(refs)
    every_task_ran(tmp_path, 30)
    # the dead driver's job goes (its 40 tasks, its object) while ours lives on
    wait_for(lambda: redis_client.hlen(keys.jobs) == 1, 30, what="the dead job's cleanup")
    redray.shutdown()
    assert_back_to_baseline(redis_client, keys, baseline)


# -- garbage in the streams mid-workload --------------------------------------------------------


def test_garbage_poured_into_the_streams_mid_workload_changes_no_result(
    settings, node_factory, redis_client, ledger, tmp_path
):
    node = node_factory(num_cpus=2)
    keys = Keys(settings.prefix)
    baseline = cluster_keys(redis_client, keys)
    redray.init(address=settings.to_url())
    tally = Tally.remote()
    assert redray.get(tally.add.remote(0), timeout=30) == 0
    inbox = redray.api.current_runtime().inbox.key
    stop = threading.Event()

    def pour() -> None:
        client = settings.client()
        n = 0
        while not stop.is_set():
            n += 1
            garbage = os.urandom(n % 64)
            member = f"CPU=10000|00000000000000|{n:020x}"
            with client.pipeline(transaction=True) as pipe:
                pipe.hset(keys.task_spec, f"{n:020x}", garbage)
                pipe.hset(keys.task_state, f"{n:020x}", "Q" + member)
                pipe.zadd(keys.ready, {member: 0})
                pipe.xadd(keys.mailbox(tally._actor_id), {b"s": garbage})
                pipe.rpush(inbox, garbage)
                pipe.rpush(keys.bell("CPU=10000"), garbage)
                pipe.rpush(keys.node_wake(node.node_id), garbage)
                pipe.xadd(keys.node_control(node.node_id), {b"r": garbage})
                pipe.execute()
            time.sleep(0.01)
        client.close()

    pourer = threading.Thread(target=pour, daemon=True)
    pourer.start()
    try:
        refs = [work.remote(i, str(tmp_path), 0.02) for i in range(40)]
        calls = [tally.add.remote(1) for _ in range(40)]
        assert redray.get(refs, timeout=90) == [10 * i for i in range(40)]
        assert redray.get(calls, timeout=90) == list(range(1, 41))
    finally:
        stop.set()
        pourer.join(10)
    ledger.assert_announced_at_most_once(refs + calls)
    assert collections.Counter(i for i, _, _ in runs(tmp_path)) == collections.Counter(range(40))
    assert redis_client.xlen(keys.dead_letters) > 0
    # what was poured in is drained by the node; then the job ends cleanly
    wait_for(lambda: redis_client.hlen(keys.task_spec) <= 1, 30, what="garbage drained")
    redray.shutdown()
    assert_back_to_baseline(redis_client, keys, baseline)
    assert node.process.poll() is None
