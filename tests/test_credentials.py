"""Credentials (issue 8, first step): the embedded server of ``init()``
refuses clients without its password, and no password shows in the argument
list (``ps``) of a node or its executors."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid

import psutil
import pytest
import redis
from conftest import Node, wait_for, worker_env

import redray
from redray.constants import Keys
from redray.server import AUTH_CONFIG, start_server
from redray.settings import Settings

PASSWORD = "s3cret-" + uuid.uuid4().hex


@pytest.fixture
def embedded():
    redray.init(num_cpus=1)
    try:
        yield redray.api._global.local.server
    finally:
        redray.shutdown()


@pytest.fixture
def password_server():
    server = start_server(binary=os.environ.get("REDRAY_TEST_SERVER") or None, password=PASSWORD)
    yield server
    server.stop()


def _cmdlines(root: psutil.Process) -> list[str]:
    lines = []
    for proc in root.children(recursive=True):
        try:
            lines.append(" ".join(proc.cmdline()))
        except psutil.NoSuchProcess:
            pass
    return lines


@redray.remote
def add(a, b):
    return a + b


def test_embedded_server_refuses_a_client_without_its_password(embedded):
    assert embedded.password  # a random one, made by init()
    anonymous = redis.Redis(host=embedded.host, port=embedded.port, protocol=2)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("planted", "x")
    finally:
        anonymous.close()
    assert redray.get(add.remote(1, 2)) == 3


def test_embedded_server_keeps_its_password_in_a_private_file(embedded):
    path = os.path.join(embedded.directory, AUTH_CONFIG)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not any(embedded.password in line for line in _cmdlines(psutil.Process()))


def test_no_password_in_the_arguments_of_the_embedded_node_and_its_executors(embedded):
    assert redray.get([add.remote(i, 1) for i in range(4)]) == [1, 2, 3, 4]
    lines = _cmdlines(psutil.Process())
    assert sum("redray.workers.node" in line for line in lines) >= 2  # the node and an executor
    assert not any(embedded.password in line for line in lines)


@pytest.mark.parametrize("how", ["address in REDRAY_ADDRESS", "password in REDRAY_PASSWORD"])
def test_a_worker_given_its_credentials_in_its_environment_shows_no_password(password_server, how):
    settings = Settings(host=password_server.host, port=password_server.port, password=PASSWORD)
    node_id = uuid.uuid4().hex[:16]
    env = worker_env()
    args = []
    if how == "address in REDRAY_ADDRESS":
        env["REDRAY_ADDRESS"] = settings.to_url()
    else:
        # as the compose file's `redray worker --address redis://redis:6379` could
        env["REDRAY_PASSWORD"] = PASSWORD
        args = ["--address", settings.replace(password=None).to_url()]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "redray.cli.main",
            "worker",
            *args,
            "--node-id",
            node_id,
            "--num-cpus",
            "1",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = settings.client()
    try:
        wait_for(
            lambda: (
                client.exists(Keys(settings.prefix).node_ready(node_id)) or proc.poll() is not None
            ),
            what="the worker node up",
        )
        assert proc.poll() is None
        node = psutil.Process(proc.pid)
        wait_for(lambda: node.children(), what="an executor forked")
        lines = [" ".join(node.cmdline()), *_cmdlines(node)]
        assert not any(PASSWORD in line for line in lines)
    finally:
        Node(proc, node_id, settings).stop()
        client.close()
