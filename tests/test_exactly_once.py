"""Exactly-once where the first protocol broke it, against real servers and nodes:
code identity (functions and classes made in a loop or redefined), reservations
released exactly once on every path, claims that cannot be orphaned, a named
actor whose creation fails, very many return values, and one idle executor
woken per task instead of all of them."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import free_cpus, wait_for

import redray
from redray import recovery
from redray import task_spec as ts
from redray.cluster import Cluster
from redray.constants import Keys
from redray.exceptions import WorkerCrashedError

CPU1 = "CPU=10000"


@redray.remote
def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


@redray.remote
def wait_on_child(seconds: float) -> int:
    return redray.get(sleep_then.remote(seconds, 7))


# -- code identity -------------------------------------------------------------------------


def test_remote_functions_made_in_a_loop_each_run_their_own_code(cluster):
    # each RemoteFunction (and its lambda) is freed right after .remote(): the
    # next one may get the same address, which an id()-keyed cache mistook for it
    refs = [redray.remote(lambda i=i: i).remote() for i in range(200)]
    assert redray.get(refs, timeout=60) == list(range(200))


def test_actor_classes_made_in_a_loop_each_run_their_own_code(cluster):
    refs, actors = [], []
    for i in range(12):
        cls = redray.remote(type(f"Made{i}", (), {"value": lambda self, i=i: i}))
        actor = cls.options(num_cpus=0).remote()
        actors.append(actor)
        refs.append(actor.value.remote())
        del cls
    assert redray.get(refs, timeout=60) == list(range(12))
    for actor in actors:
        redray.kill(actor)


def test_a_function_redefined_under_the_same_name_runs_the_new_code(cluster):
    namespace = {"redray": redray}
    for i in range(20):
        exec(f"@redray.remote\ndef f():\n    return {i}\n", namespace)  # noqa: S102
        assert redray.get(namespace["f"].remote(), timeout=30) == i


# -- reservations released exactly once ----------------------------------------------------


def test_a_task_killed_while_blocked_in_get_gives_back_exactly_what_it_held(
    settings, node_factory, connect, redis_client
):
    node = node_factory(num_cpus=2)
    connect()
    blocked = wait_on_child.remote(4)
    # blocked in get: its CPU went back to the node and its child took one
    wait_for(lambda: free_cpus(redis_client, node.node_id) == 1.0, what="child running")
    time.sleep(0.5)
    redray.cancel(blocked, force=True)  # SIGKILL while blocked
    with pytest.raises(WorkerCrashedError):
        redray.get(blocked, timeout=30)
    # when its child is done too, the node has exactly its 2 CPUs free: the
    # killed task gave back only what it still held (the first protocol
    # released its whole reservation again: 3 CPUs free)
    wait_for(lambda: not redis_client.hlen(Keys().node_running(node.node_id)), timeout=60)
    samples = []
    for _ in range(20):
        samples.append(free_cpus(redis_client, node.node_id))
        time.sleep(0.05)
    assert set(samples) == {2.0}


def test_an_executor_dead_right_after_its_claim_ran_does_not_orphan_the_task(
    settings, redis_client
):
    """claim.lua ran, its executor died before noting the claim anywhere (not
    even its shared-memory slot): the claim record alone recovers the task."""
    cluster = Cluster.connect(settings)
    keys = cluster.keys
    node, worker = "n" * 16, "w" * 20
    redis_client.hset(keys.jobs, "j1", "{}")
    redis_client.hset(keys.node_avail(node), mapping={"CPU": 10_000})
    tid = "a" * 20
    spec = ts.encode(ts.TaskSpec(tid, "j1", "", "", "f", b"", (), 1, "owner", 3, False))
    cluster.scripts.submit("j1", "owner", [(1, tid, CPU1, spec, [])])
    claimed = cluster.scripts.parse_claim(cluster.scripts.claim(node, worker, [CPU1]))
    assert claimed is not None and claimed.task_id == tid
    assert free_cpus(redis_client, node) == 0
    # the executor is gone; its node only knows its id
    recovery.recover_executor(cluster, node, worker, "killed by signal 9")
    assert free_cpus(redis_client, node) == 1.0
    assert redis_client.hget(keys.task_state, tid).startswith(b"Q")
    assert not redis_client.exists(keys.claim(worker))
    again = cluster.scripts.parse_claim(cluster.scripts.claim(node, "v" * 20, [CPU1]))
    assert again is not None and again.task_id == tid
    cluster.close()


# -- actors ----------------------------------------------------------------------------------


@redray.remote
class Named:
    def __init__(self, value: object = None) -> None:
        self.value = value

    def ping(self) -> str:
        return "pong"


def test_a_named_actor_whose_creation_fails_does_not_hold_its_name(cluster):
    with pytest.raises(TypeError, match="serialize"):
        Named.options(name="ghost").remote(threading.Lock())
    with pytest.raises(ValueError, match="ghost"):
        redray.get_actor("ghost")
    actor = Named.options(name="ghost").remote(1)
    assert redray.get(actor.ping.remote(), timeout=30) == "pong"
    redray.kill(actor)


# -- limits ----------------------------------------------------------------------------------


@redray.remote(num_returns=10_000)
def many() -> list[int]:
    return list(range(10_000))


def test_a_task_with_ten_thousand_return_values_delivers_every_one(cluster):
    refs = many.remote()
    values = redray.get(refs, timeout=120)
    assert values == list(range(10_000))


# -- wake one, not all -------------------------------------------------------------------------


@redray.remote
def noop() -> None:
    return None


class ScriptCounter:
    """Counts script calls by script, watching the server with MONITOR."""

    def __init__(self, settings) -> None:
        from redray.scripts import Scripts

        client = settings.client()
        shas = Scripts(client, Keys()).__dict__["_scripts"]
        self.names = {script.sha: name for name, script in shas.items()}
        client.close()
        self.counts: dict[str, int] = {}
        self._client = settings.client()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _watch(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            for event in monitor.listen():
                if self._stop.is_set():
                    return
                words = event.get("command", "").split()
                if len(words) > 1 and words[0].upper() == "EVALSHA":
                    name = self.names.get(words[1], "?")
                    self.counts[name] = self.counts.get(name, 0) + 1

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._client.ping()  # one more event wakes the watcher
        self._thread.join(timeout=10)
        self._client.close()
        return dict(self.counts)


@pytest.mark.parametrize("executors", [1, 8, 16])
def test_one_idle_executor_claims_per_task_however_many_are_idle(
    settings, node_factory, connect, executors
):
    node_factory(num_cpus=2, config={"min_executors": executors, "max_executors": executors})
    connect()
    redray.get([noop.remote() for _ in range(50)], timeout=60)
    time.sleep(1.0)  # the executors park or listen; the counts below are per task
    counter = ScriptCounter(settings)
    n = 150
    for _ in range(n):
        redray.get(noop.remote(), timeout=30)
    counts = counter.stop()
    # heartbeats and reapers call their own scripts a few times a second
    per_task = sum(counts.get(name, 0) for name in ("submit", "claim", "complete")) / n
    # submit + claim (by the executor the bell woke) + complete-and-claim-next
    assert per_task <= 3.0, f"{per_task:.2f} script calls per task ({counts})"
