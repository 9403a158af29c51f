"""Memory in Redis (and in each process) is bounded while a job runs, not only
when it ends: results nobody holds a ref to, executors' inboxes, actor-call
bookkeeping, cancel records, and the keys of nodes that died."""

from __future__ import annotations

import signal
import time

import pytest
from conftest import cluster_keys, wait_for

import redray
from redray import session
from redray.constants import Keys
from redray.exceptions import TaskCancelledError


@redray.remote
def blob(i: int) -> bytes:
    return bytes([i % 256]) * 2048


@redray.remote
def spawner(n: int) -> int:
    for i in range(n):
        blob.remote(i)  # fire and forget, inside a task
    return n


@redray.remote
class Sink:
    def take(self, i: int) -> bytes:
        return bytes([i % 256]) * 2048

    def ping(self) -> str:
        return "pong"


def _objects(client, keys: Keys) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=keys.tag + ":obj:*", count=1000)}


def test_results_of_fire_and_forget_tasks_are_freed_while_the_job_runs(cluster, redis_client):
    keys = Keys()
    before = _objects(redis_client, keys)
    for i in range(500):
        blob.remote(i)  # the ref is dropped at once
    # no get, no wait: the flusher applies the notices and frees the results
    wait_for(lambda: _objects(redis_client, keys) == before, timeout=30)


def test_a_loop_of_large_puts_keeps_one_private_copy_not_all_of_them(cluster):
    runtime = session.current_runtime()
    big = b"q" * (2 * 1024 * 1024)
    held = []
    for _ in range(20):
        assert len(redray.get(redray.put(big))) == len(big)  # the ref is dropped at once
        held.append(len(runtime.objects.large_owned))
    # each put frees the copies already dropped before it makes its own
    assert max(held) <= 2, held


def test_results_of_fire_and_forget_actor_calls_are_freed_and_their_bookkeeping_goes(
    cluster, redis_client
):
    keys = Keys()
    sink = Sink.remote()
    assert redray.get(sink.ping.remote(), timeout=30) == "pong"
    before = _objects(redis_client, keys)
    for i in range(300):
        sink.take.remote(i)
    runtime = session.current_runtime()
    wait_for(lambda: _objects(redis_client, keys) == before, timeout=30)
    wait_for(lambda: not runtime.refs.calls and not runtime.refs.in_flight, timeout=30)
    redray.kill(sink)


def test_an_executors_inbox_does_not_keep_the_notices_of_fire_and_forget_children(
    cluster, redis_client
):
    keys = Keys()
    before = _objects(redis_client, keys)
    assert redray.get(spawner.remote(200), timeout=60) == 200

    def drained() -> bool:
        inboxes = [
            k
            for k in redis_client.scan_iter(match=keys.tag + ":inbox:*", count=1000)
            if not k.decode().split(":")[-1].startswith("driver-")
        ]
        return not inboxes and _objects(redis_client, keys) == before

    wait_for(drained, timeout=30, what="executor inboxes drained, children's results freed")


def test_a_cancelled_actor_call_leaves_nothing_in_the_actors_cancel_set(cluster, redis_client):
    keys = Keys()

    @redray.remote
    class Slow:
        def wait(self, seconds: float) -> float:
            time.sleep(seconds)
            return seconds

    slow = Slow.remote()
    busy = slow.wait.remote(1.0)
    pending = slow.wait.remote(0.1)
    redray.cancel(pending)
    with pytest.raises(TaskCancelledError):
        redray.get(pending, timeout=30)
    assert redray.get(busy, timeout=30) == 1.0
    wait_for(lambda: not redis_client.exists(keys.actor_cancelled(slow._actor_id)), timeout=10)
    redray.kill(slow)


def test_a_node_killed_with_sigkill_leaves_no_key_of_its_own(
    settings, node_factory, connect, redis_client
):
    keys = Keys()
    survivor = node_factory(num_cpus=1, config={"node_timeout": 2.0})
    doomed = node_factory(num_cpus=1)
    connect()
    f = redray.remote(lambda: 1)
    assert redray.get([f.remote() for _ in range(10)], timeout=30) == [1] * 10
    workers = [w.decode() for w in redis_client.smembers(keys.node_workers(doomed.node_id))]
    assert workers
    doomed.kill(signal.SIGKILL)
    wait_for(lambda: not redis_client.hexists(keys.nodes, doomed.node_id), timeout=30)

    def nothing_left() -> bool:
        names = [doomed.node_id, *workers]
        return not [k for k in cluster_keys(redis_client, keys) if any(n in k for n in names)]

    wait_for(nothing_left, timeout=10, what="the dead node's keys deleted")
    assert redis_client.hexists(keys.nodes, survivor.node_id)
