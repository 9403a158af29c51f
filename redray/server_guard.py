"""The guard of a driver's private Redis server where no node agent runs.

An embedded ``init()`` starts a server and a node agent; the agent watches the
driver and stops the server if the driver dies without ``shutdown()``
(``workers/node.py``). ``init(local_mode=True)`` starts the server alone, so
this small process does that watching instead: every ``POLL`` seconds it
checks the driver and the server (by pid and start time, so a reused pid is
not taken for either), exits once the server is gone (``shutdown()`` stopped
it), and stops the server and removes its directory once the driver is gone
(SIGKILL, a crash, ``os._exit``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from .jobs import process_started
from .node_launch import module_command

#: seconds between two looks at the driver and the server
POLL = 0.5


def stop_owned_server(
    pid: int | None, directory: str | None, started: float | None, timeout: float = 5.0
) -> None:
    """The driver that owned this server died: stop it and remove its files.
    ``started``: the server's start time when its owner's watcher saw it (None:
    it was gone already). A process that has its pid now but started
    otherwise is another (pids are reused: 32,768 of them on many machines)
    and is left alone."""
    if pid is not None and started is not None and process_started(pid) == started:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while process_started(pid) == started and time.monotonic() < deadline:
                time.sleep(0.02)
            if process_started(pid) == started:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


def guard(owner_pid: int, server_pid: int, directory: str) -> None:
    """Watch until the server is gone, or stop it once its owner is."""
    owner = process_started(owner_pid)
    server = process_started(server_pid)
    while server is not None and process_started(server_pid) == server:
        if owner is None or process_started(owner_pid) != owner:
            stop_owned_server(server_pid, directory, server)
            return
        time.sleep(POLL)


def spawn(owner_pid: int, server_pid: int, directory: str) -> subprocess.Popen[bytes]:
    """Start the guard; it runs in its own session, so a Ctrl-C in the
    driver's terminal reaches the driver (whose shutdown stops the server)
    and not the guard."""
    return subprocess.Popen(
        module_command("redray.server_guard", str(owner_pid), str(server_pid), directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> None:
    owner, server, directory = sys.argv[1:] if argv is None else argv
    guard(int(owner), int(server), directory)


if __name__ == "__main__":
    main()
