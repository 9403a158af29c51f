"""Stopping a dead driver's private server (redray/server_guard.py) never
signals a process that only reuses the server's pid."""

from __future__ import annotations

import subprocess
from pathlib import Path

from redray import jobs, server_guard


def test_a_process_that_reused_the_servers_pid_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "30"])
    try:
        started = jobs.process_started(other.pid)
        assert started is not None
        server_dir = tmp_path / "server"
        server_dir.mkdir()
        # the owner saw a server with this pid start at another time
        server_guard.stop_owned_server(other.pid, str(server_dir), started - 5)
        assert other.poll() is None
        assert not server_dir.exists()  # the dead server's files still go
    finally:
        other.kill()
        other.wait()


def test_the_server_it_saw_start_is_stopped(tmp_path: Path) -> None:
    server = subprocess.Popen(["sleep", "30"])
    try:
        started = jobs.process_started(server.pid)
        server_guard.stop_owned_server(server.pid, None, started)
        assert server.wait(5) is not None
    finally:
        server.kill()
        server.wait()
