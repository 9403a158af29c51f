"""The CLI on users' machines: started from a directory that holds another
``redray/`` (a clone of the repository), and stopped while its cluster's Redis
does not answer.

Real processes throughout: the ``redray`` command as its console script runs
it (the working directory is not on its ``sys.path``), nodes, executors and
servers on free loopback ports.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import PersistentServer, server_args, start_node, wait_for, wait_gone, worker_env

import redray
from redray.cli import processes
from redray.constants import Keys
from redray.server import free_port
from redray.settings import Settings

#: Seconds a stopping worker may take, generous for a loaded machine: a stop
#: that waited out the outage budget took 13-23 s here, one that does not ~1 s.
STOP_BOUND = 8.0

DECOY = 'raise ImportError("the redray/ folder of the working directory was imported")\n'


@redray.remote
def double(x: int) -> int:
    return 2 * x


@redray.remote
def from_user_module() -> str:
    import usermod  # in the directory the cluster was started from

    return str(usermod.WHO)


@redray.remote(max_retries=3)
def held_once(marker: str) -> str:
    """Holds its executor on the first try; the second try returns."""
    if os.path.exists(marker):
        return "second try"
    Path(marker).touch()
    time.sleep(600)
    return "first try"


def decoy_directory(path: Path) -> Path:
    """A directory like a clone of the repository: a ``redray/`` package that
    is not the installed one (this one cannot even be imported), next to a
    user's own module."""
    path.mkdir()
    (path / "redray").mkdir()
    (path / "redray" / "__init__.py").write_text(DECOY)
    (path / "usermod.py").write_text('WHO = "the user module"\n')
    return path


def run_redray(
    tmp_path: Path, *args: str, cwd: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """``redray ARGS`` from ``cwd``, run as the console script runs it."""
    script = tmp_path / "redray_command.py"
    script.write_text("from redray.cli.main import cli\n\ncli(prog_name='redray')\n")
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=cwd,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def children_of(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def assert_stops_promptly(node_process: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the node exits within STOP_BOUND, its executors with it."""
    executors = children_of(node_process)
    assert executors
    node_process.send_signal(signal.SIGTERM)
    try:
        node_process.wait(STOP_BOUND)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker was still running {STOP_BOUND} s after SIGTERM")
    assert node_process.returncode == 0
    # the node waited for its executors before it exited
    assert wait_gone(executors, 1.0) == []


# -- started from a directory holding another redray/ ------------------------------------------
def test_start_status_stop_and_tasks_work_from_a_directory_with_another_redray(
    redray_tmp: Path, tmp_path: Path
) -> None:
    here = decoy_directory(tmp_path / "clone")
    port = str(free_port())
    head = ["start", "--head", "--port", port, "--num-cpus", "1", "--include-dashboard", "false"]
    head += server_args()
    started = run_redray(tmp_path, *head, cwd=here)
    assert started.returncode == 0, started.stdout + started.stderr
    entries = processes.read_state()
    try:
        assert sorted(e["kind"] for e in entries) == ["node", "server"]
        status = run_redray(tmp_path, "status", cwd=here)
        assert status.returncode == 0, status.stdout + status.stderr
        [node] = [e for e in entries if e["kind"] == "node"]
        assert node["node_id"] in status.stdout

        redray.init(address="auto")
        assert redray.get(double.remote(21)) == 42
        # the directory `start` ran in is still importable by the workers
        assert redray.get(from_user_module.remote()) == "the user module"
        redray.shutdown()
    finally:
        procs = [psutil.Process(e["pid"]) for e in entries if processes.live_process(e)]
        procs += [c for p in procs for c in p.children(recursive=True)]  # the executors
        stopped = run_redray(tmp_path, "stop", cwd=here)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "Stopped 2 redray processes." in stopped.stdout
    assert wait_gone(procs, 5.0) == []


def test_init_works_from_a_directory_with_another_redray(
    redray_tmp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(decoy_directory(tmp_path / "clone"))
    redray.init(address="local", num_cpus=1)
    try:
        assert redray.get(double.remote(4)) == 8
        assert redray.get(from_user_module.remote()) == "the user module"
    finally:
        redray.shutdown()


# -- stopping a foreground worker ----------------------------------------------------------------
def test_sigterm_stops_a_busy_worker_and_its_executors_while_redis_is_down(
    persistent: PersistentServer, tmp_path: Path
) -> None:
    settings = Settings(host="127.0.0.1", port=persistent.port)
    node = start_node(settings, via_cli=True, num_cpus=2)
    # a driver in a process of its own keeps both executors busy
    driver_code = (
        "import os, sys, time\n"
        "import redray\n"
        "@redray.remote\n"
        "def hold(path):\n"
        "    open(path, 'w').close()\n"
        "    time.sleep(600)\n"
        "redray.init(address=sys.argv[1])\n"
        "redray.get([hold.remote(os.path.join(sys.argv[2], str(i))) for i in range(2)])\n"
    )
    driver = subprocess.Popen(
        [sys.executable, "-c", driver_code, settings.to_url(), str(tmp_path)],
        env=worker_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(
            lambda: (tmp_path / "0").exists() and (tmp_path / "1").exists(),
            timeout=60,
            what="both executors running a task",
        )
        persistent.kill()
        # into the outage: the node's Redis calls fail and are being retried
        time.sleep(1.0)
        assert_stops_promptly(node.process)
    finally:
        node.kill()
        driver.kill()
        driver.wait(10)


def test_sigterm_stops_a_busy_worker_that_deregisters_and_hands_its_task_back(
    settings: Settings, node_factory: Any, tmp_path: Path
) -> None:
    node = start_node(settings, via_cli=True, num_cpus=1)
    try:
        redray.init(address=settings.to_url())
        marker = tmp_path / "started"
        ref = held_once.remote(str(marker))
        wait_for(marker.exists, timeout=60, what="the task running")
        assert_stops_promptly(node.process)
    finally:
        node.kill()
    client = settings.client()
    try:
        # it removed its registration on the way out
        assert client.hlen(Keys(settings.prefix).nodes) == 0
    finally:
        client.close()
    # and the task it was running runs again elsewhere
    node_factory(num_cpus=1)
    assert redray.get(ref, timeout=60) == "second try"


def test_module_command_runs_the_launching_redray_not_the_working_directory_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redray.node_launch import module_command

    monkeypatch.chdir(decoy_directory(tmp_path / "clone"))
    probe = subprocess.run(
        module_command("redray.cli.main", "--version"),
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == f"redray, version {redray.__version__}"
