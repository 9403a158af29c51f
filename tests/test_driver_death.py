"""A driver that dies without shutdown() leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings

import psutil
from conftest import worker_env

from redray.constants import Keys

EMBEDDED_DRIVER = """
import json, os, signal, sys
import redray

@redray.remote
def add(a, b):
    return a + b

redray.init(num_cpus=1)
rt = redray.api.current_runtime()
node = redray.api._global.node_process.pid
server = redray.api._global.server
assert redray.get(add.remote(1, 2)) == 3
print(json.dumps({"node": node, "server": server.pid, "dir": server.directory}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

CONNECTED_DRIVER = """
import os, signal, sys
import redray

@redray.remote
def add(a, b):
    return a + b

redray.init(address=sys.argv[1])
kept = [redray.put(b"x" * 300_000), redray.put(1)]
refs = [add.remote(i, 1) for i in range(10)]
assert redray.get(refs) == list(range(1, 11))
pending = add.options(resources={"nowhere": 1}).remote(1, 2)
redray.api.current_runtime().flush()
print("ready", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_killed_embedded_driver_takes_its_node_and_server_down(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", EMBEDDED_DRIVER],
        capture_output=True,
        text=True,
        timeout=60,
        env=worker_env(),
        cwd=tmp_path,
    )
    info = json.loads(done.stdout.strip().splitlines()[-1])
    deadline = time.monotonic() + 15
    while not (_gone(info["node"]) and _gone(info["server"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(info["node"])
    assert _gone(info["server"])
    import os

    assert not os.path.exists(info["dir"])


def test_killed_driver_job_is_cleaned_up_by_the_cluster(settings, node_factory, redis_client):
    node_factory(num_cpus=2, config={"job_timeout": 2.0})
    keys = Keys()
    baseline = set(redis_client.keys("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        done = subprocess.run(
            [sys.executable, "-c", CONNECTED_DRIVER, settings.to_url()],
            capture_output=True,
            text=True,
            timeout=60,
            env=worker_env(),
        )
    assert "ready" in done.stdout, done.stderr
    # and the task events, which outlive jobs (redray.util.state lists them)
    allowed = {keys.job_counter, keys.seq, keys.shapes, keys.task_events}
    allowed = {k.encode() for k in allowed}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        extra = set(redis_client.keys("*")) - baseline - allowed
        if not extra:
            break
        time.sleep(0.2)
    assert set(redis_client.keys("*")) - baseline - allowed == set()
    assert redis_client.hlen(keys.jobs) == 0
