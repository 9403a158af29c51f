"""Least privilege: a cluster runs its whole life as an ACL user limited to
its prefix's keys and channels and to ``redray.acl.COMMANDS``, and cannot
touch another prefix's keys."""

from __future__ import annotations

import os
import time
import uuid

import pytest
import redis
from conftest import assert_back_to_baseline, cluster_keys

import redray
from redray import acl
from redray.constants import Keys
from redray.server import start_server
from redray.settings import Settings
from redray.util.queue import Queue

ADMIN = "admin-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def acl_server():
    server = start_server(binary=os.environ.get("REDRAY_TEST_SERVER") or None, password=ADMIN)
    yield server
    server.stop()


@pytest.fixture
def admin(acl_server):
    client = redis.Redis(host=acl_server.host, port=acl_server.port, password=ADMIN, protocol=2)
    yield client
    client.close()


def _user(admin, acl_server, prefix: str) -> Settings:
    name, password = "u-" + prefix, uuid.uuid4().hex
    admin.execute_command("ACL", "SETUSER", name, *acl.rules(prefix, password))
    return Settings(
        host=acl_server.host, port=acl_server.port, username=name, password=password, prefix=prefix
    )


@redray.remote
def add(a, b):
    return a + b


@redray.remote
def big(n):
    return b"x" * n


@redray.remote(num_returns=3)
def three():
    return 1, 2, 3


@redray.remote
def count_to(n):
    yield from range(n)


@redray.remote
def sleepy():
    time.sleep(30)


@redray.remote
class Box:
    def __init__(self, queue):
        self.queue = queue

    def put(self, v):
        self.queue.put(v)
        return v


def test_a_cluster_lives_its_whole_life_under_the_least_privilege_user(
    admin, acl_server, node_factory
):
    settings = _user(admin, acl_server, "acl" + uuid.uuid4().hex[:6])
    keys = Keys(settings.prefix)
    node = node_factory(settings=settings, num_cpus=2)  # stopped by the fixture if we fail
    baseline = cluster_keys(admin, keys)
    redray.init(address=settings.to_url())
    try:
        chained = add.remote(add.remote(1, 2), 3)
        assert redray.get(chained) == 6
        assert redray.get(three.remote()) == [1, 2, 3]
        assert list(redray.get(r) for r in count_to.remote(3)) == [0, 1, 2]
        assert len(redray.get(big.remote(3 * 1024 * 1024))) == 3 * 1024 * 1024
        assert redray.get(redray.put(b"y" * (2 * 1024 * 1024)))[:1] == b"y"
        queue = Queue()
        box = Box.options(name="box").remote(queue)
        assert redray.get(box.put.remote(7)) == 7
        assert queue.get(timeout=10) == 7
        assert redray.get(redray.get_actor("box").put.remote(8)) == 8
        redray.kill(box)
        slow = sleepy.remote()
        time.sleep(0.5)
        redray.cancel(slow, force=True)
        with pytest.raises(
            (redray.exceptions.TaskCancelledError, redray.exceptions.WorkerCrashedError)
        ):
            redray.get(slow, timeout=20)
    finally:
        redray.shutdown()
    assert_back_to_baseline(admin, keys, baseline)
    node.stop()
    assert node.process.returncode == 0


@redray.remote(max_retries=-1)
def where(i):
    time.sleep(0.2)
    return i, redray.get_runtime_context().get_node_id()


def test_a_dead_nodes_work_is_recovered_under_the_least_privilege_user(
    admin, acl_server, node_factory
):
    settings = _user(admin, acl_server, "rec" + uuid.uuid4().hex[:6])
    keys = Keys(settings.prefix)
    fast = {"node_timeout": 2.0}
    doomed = node_factory(settings=settings, num_cpus=2, config=fast)
    survivor = node_factory(settings=settings, num_cpus=2, config=fast)
    baseline = cluster_keys(admin, keys)
    redray.init(address=settings.to_url())
    try:
        refs = [where.remote(i) for i in range(20)]
        deadline = time.monotonic() + 30
        while True:  # until the doomed node has finished a task: it holds others
            done, _ = redray.wait(refs, num_returns=len(refs), timeout=0.05)
            if any(redray.get(r)[1] == doomed.node_id for r in done):
                break
            assert time.monotonic() < deadline, "no task ran on the doomed node"
        doomed.kill()  # the agent and its executors, mid-workload
        results = redray.get(refs, timeout=90)
        assert [i for i, _ in results] == list(range(20))
        assert survivor.node_id in {n for _, n in results}
    finally:
        redray.shutdown()
    assert_back_to_baseline(admin, keys, baseline, gone_nodes=[doomed.node_id])
    # only the survivor's recovery (run as this user) deletes a killed node's keys
    assert not admin.hexists(keys.nodes, doomed.node_id)
    survivor.stop()


def test_one_clusters_user_cannot_touch_another_clusters_keys(admin, acl_server):
    mine = _user(admin, acl_server, "mine" + uuid.uuid4().hex[:6])
    theirs = _user(admin, acl_server, "theirs" + uuid.uuid4().hex[:6])
    admin.set(Keys(theirs.prefix).tag + ":secret", "x")
    client = mine.client()
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get(Keys(theirs.prefix).tag + ":secret")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(Keys(theirs.prefix).tag + ":planted", "x")
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.flushall()
    finally:
        client.close()


def test_the_printed_acl_line_is_accepted_by_the_server(admin):
    line = acl.setuser_line("printed", "p", password="pw123")
    assert admin.execute_command(*line.split()) in (b"OK", "OK", True)
