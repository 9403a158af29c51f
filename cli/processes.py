"""The processes ``redray start`` started on this machine, and stopping them.

``start`` records each one in ``<tmp>/redray-sessions/started.json`` (pid, kind
and process creation time, so that ``stop`` never signals a pid the system
has since reused) and keeps its output in a session directory of its own.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from redray import api

STATE_FILE_NAME = "started.json"
LOCK_FILE_NAME = "started.lock"
#: Largest difference (seconds) between a recorded and a live process creation time
#: for both to be the same process.
CREATE_TIME_TOLERANCE = 1.0
KIND_NAMES = {"node": "node agent", "server": "Redis server", "dashboard": "dashboard"}


# -- where things live ----------------------------------------------------------------------
def redray_dir() -> Path:
    """``<tmp>/redray-sessions``: the address file, the state file and the session directories."""
    return api.address_file().parent


def state_file() -> Path:
    return redray_dir() / STATE_FILE_NAME


def new_session_dir() -> Path:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S_%f")
    session = redray_dir() / f"session_{stamp}_{os.getpid()}"
    (session / "logs").mkdir(parents=True)
    latest = redray_dir() / "session_latest"
    with contextlib.suppress(OSError):
        tmp = latest.with_name(f"session_latest.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(session.name)
        os.replace(tmp, latest)
    return session


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only (the
    address file and the state file hold the cluster's password)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its mode through O_CREAT
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_address(address: str, *, overwrite: bool = True) -> None:
    path = api.address_file()
    if overwrite or not path.exists():
        write_atomic(path, address + "\n")


def log_tail(path: Path | str, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# -- the state file -------------------------------------------------------------------------
@contextlib.contextmanager
def state_lock() -> Iterator[None]:
    directory = redray_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state() -> list[dict[str, Any]]:
    """The processes ``start`` recorded (unreadable or malformed entries are skipped)."""
    try:
        data = json.loads(state_file().read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [e for e in data if isinstance(e, dict) and isinstance(e.get("pid"), int)]


def write_state(entries: list[dict[str, Any]]) -> None:
    if entries:
        write_atomic(state_file(), json.dumps(entries, indent=2) + "\n")
    else:
        state_file().unlink(missing_ok=True)


def record(entry: dict[str, Any]) -> None:
    with state_lock():
        write_state([*read_state(), entry])


def forget(entries: list[dict[str, Any]]) -> None:
    gone = {(e["pid"], e.get("create_time")) for e in entries}
    with state_lock():
        write_state([e for e in read_state() if (e["pid"], e.get("create_time")) not in gone])


# -- processes ------------------------------------------------------------------------------
def entry_for(pid: int, kind: str, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "kind": kind, "create_time": psutil.Process(pid).create_time(), **extra}


def live_process(entry: dict[str, Any]) -> psutil.Process | None:
    """The running process an entry names; None if it exited or its pid was reused."""
    try:
        proc = psutil.Process(int(entry["pid"]))
        recorded = float(entry["create_time"])
        if abs(proc.create_time() - recorded) > CREATE_TIME_TOLERANCE:
            return None
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    return None if _gone(proc) else proc


def _gone(proc: psutil.Process) -> bool:
    """True once ``proc`` exited (a zombie counts: it is reaped here if it is our child)."""
    try:
        if not proc.is_running():
            return True
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
    with contextlib.suppress(OSError):
        os.waitpid(proc.pid, os.WNOHANG)
    return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to exit; those still running."""
    deadline = time.monotonic() + timeout
    left = [p for p in procs if not _gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if not _gone(p)]
    return left


def _signal(proc: psutil.Process, force: bool) -> bool:
    """SIGKILL (force) or SIGTERM ``proc``; False if it is already gone."""
    try:
        if force:
            proc.kill()
        else:
            proc.terminate()
    except psutil.NoSuchProcess:
        return False
    return True


def _group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of process group ``pgid``."""
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and not _gone(proc):
                members.append(proc)
        except (OSError, psutil.Error):
            continue
    return members


def stop_entries(
    entries: list[dict[str, Any]], *, force: bool, grace: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Stop the recorded processes ``entries``: (stopped, not running, could not stop).

    A node agent stops its executors itself on SIGTERM. Whatever is left of its
    process group (its executors: it leads a session of its own) once it has
    exited, or all of the group at once with ``force``, gets SIGKILL here.
    Processes still running ``grace`` seconds after SIGTERM get SIGKILL.
    """
    stopped: list[dict[str, Any]] = []
    not_running: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    signalled: list[tuple[dict[str, Any], psutil.Process]] = []
    descendants: list[psutil.Process] = []
    groups: list[int] = []
    for entry in entries:
        proc = live_process(entry)
        if proc is None:
            not_running.append(entry)
            continue
        if entry.get("kind") == "node":
            with contextlib.suppress(psutil.Error):
                descendants.extend(proc.children(recursive=True))
            with contextlib.suppress(OSError):
                if os.getpgid(proc.pid) == proc.pid:
                    groups.append(proc.pid)
        try:
            if force and proc.pid in groups:
                os.killpg(proc.pid, signal.SIGKILL)
            elif not _signal(proc, force):
                not_running.append(entry)
                continue
        except (psutil.AccessDenied, PermissionError):
            failed.append(entry)
            continue
        except ProcessLookupError:
            not_running.append(entry)
            continue
        signalled.append((entry, proc))
    left = _wait_gone([p for _, p in signalled], grace)
    if left:
        for proc in left:
            with contextlib.suppress(psutil.Error):
                _signal(proc, True)
        left = _wait_gone(left, 5.0)
    for entry, proc in signalled:
        (failed if proc in left else stopped).append(entry)
    # what the nodes left behind: executors, also those forked after the snapshot
    orphans = [p for p in descendants if not _gone(p)]
    for pgid in groups:
        orphans += [p for p in _group_members(pgid) if p not in orphans]
    for proc in orphans:
        with contextlib.suppress(psutil.Error):
            _signal(proc, True)
    _wait_gone(orphans, 5.0)
    return stopped, not_running, failed


def describe(entry: dict[str, Any]) -> str:
    kind = KIND_NAMES.get(str(entry.get("kind")), str(entry.get("kind")))
    extra = f", node {entry['node_id']}" if entry.get("node_id") else ""
    return f"{kind} (pid {entry['pid']}{extra})"


def child_env() -> dict[str, str]:
    """The environment of a node: executors import the driver's modules by name."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p] + [os.getcwd()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env
