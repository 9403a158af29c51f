"""The hot loops' kept connection (connections.Lane) and the lazy flusher,
against a real server."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import redis
from conftest import wait_for

import redray
from redray import connections
from redray.settings import Settings


def test_a_lane_keeps_one_connection_between_calls(settings: Settings) -> None:
    client = connections.client(settings)
    lane = connections.Lane(client)
    try:
        first = lane.take()
        lane.give(first)
        second = lane.take()
        lane.give(second)
        assert first is second
        pipe = connections.Batch(lane)
        pipe.command("PING")
        assert pipe.execute() == [b"PONG"]
    finally:
        lane.close()
        client.close()


def test_a_thread_that_finds_the_lane_busy_takes_a_pooled_connection(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = connections.single_shot(settings)
    lane = connections.Lane(client)
    key = "test:lane:busy"
    got: list[object] = []
    try:
        # one thread blocks on the lane's connection; another's call must not wait for it
        blocker = threading.Thread(
            target=lambda: got.append(connections.blocking_call(lane, 5, "BLPOP", key, 5))
        )
        blocker.start()
        wait_for(lambda: lane._lock.locked(), what="the blocking call holds the lane")
        pipe = connections.Batch(lane)
        pipe.command("RPUSH", key, "x")
        assert pipe.execute() == [1]  # on a pooled connection, while the lane is held
        blocker.join(10)
        assert got == [[key.encode(), b"x"]]
    finally:
        redis_client.delete(key)
        lane.close()
        client.close()


def test_a_sent_batch_holds_the_lane_until_its_replies_are_collected(
    settings: Settings, redis_client: redis.Redis
) -> None:
    client = connections.client(settings)
    lane = connections.Lane(client)
    key = "test:lane:sent"
    try:
        pipe = connections.Batch(lane)
        pipe.command("RPUSH", key, "a")
        pipe.command("LRANGE", key, 0, -1)
        sent = pipe.send()
        assert lane._lock.locked()
        other = connections.Batch(lane)  # meanwhile another call takes a pooled connection
        other.command("RPUSH", key + ":other", "b")
        assert other.execute() == [1]
        assert sent.collect() == [1, [b"a"]]
        assert not lane._lock.locked()
        with pytest.raises(RuntimeError, match="already collected"):
            sent.collect()
    finally:
        redis_client.delete(key, key + ":other")
        lane.close()
        client.close()


def test_a_forked_child_does_not_use_its_parents_lane_connection(settings: Settings) -> None:
    client = connections.client(settings)
    lane = connections.Lane(client)
    parent = lane.take()
    lane.give(parent)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            conn = lane.take()
            same = conn is parent
            lane.give(conn)
            os.write(write, b"same" if same else b"own")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    os.close(read)
    lane.close()
    client.close()
    assert answer == b"own"


@redray.remote
def noop() -> None:
    return None


@redray.remote
def touch(path: str) -> None:
    Path(path).touch()


def test_a_task_nobody_waits_for_runs_after_a_loop_of_synchronous_gets(
    cluster, tmp_path: Path
) -> None:
    # a get after each remote makes the flusher lazy (the caller sends its batches) ...
    for _ in range(20):
        redray.get(noop.remote(), timeout=30)
    # ... and a submission nobody waits for is still sent, with no other API call
    marker = tmp_path / "ran"
    touch.remote(str(marker))
    wait_for(marker.exists, timeout=30, what="the fire-and-forget task ran")
