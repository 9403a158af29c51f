"""A driver that dies without shutdown() leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from typing import Any

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
node = redray.api._global.local.node_process.pid
server = redray.api._global.local.server
assert redray.get(add.remote(1, 2)) == 3
print(json.dumps({"node": node, "server": server.pid, "dir": server.directory}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""

LOCAL_MODE_DRIVER = """
import json, os, signal
import redray

@redray.remote
def add(a, b):
    return a + b

redray.init(local_mode=True)
server = redray.api._global.local.server
guard = redray.api._global.local.server_guard.pid
assert redray.get(add.remote(1, 2)) == 3
print(json.dumps({"guard": guard, "server": server.pid, "dir": server.directory}), flush=True)
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


def _driver_info(script: str, cwd: Any) -> dict[str, Any]:
    """Run a driver script; the pids and directory it printed last."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env=worker_env(),
        cwd=cwd,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]), returncode=done.returncode)


def _all_gone(*pids: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(_gone(p) for p in pids)


def test_killed_embedded_driver_takes_its_node_and_server_down(tmp_path):
    info = _driver_info(EMBEDDED_DRIVER, tmp_path)
    assert _all_gone(info["node"], info["server"])
    assert not os.path.exists(info["dir"])


def test_killed_local_mode_driver_takes_its_server_down(tmp_path):
    info = _driver_info(LOCAL_MODE_DRIVER, tmp_path)
    assert _all_gone(info["server"], info["guard"])
    assert not os.path.exists(info["dir"])


def test_local_mode_shutdown_stops_the_servers_guard(tmp_path):
    script = LOCAL_MODE_DRIVER.replace("os.kill(os.getpid(), signal.SIGKILL)", "redray.shutdown()")
    info = _driver_info(script, tmp_path)
    assert info["returncode"] == 0
    assert _gone(info["guard"]) and _gone(info["server"])


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
