"""Starting a dashboard process in the background: for ``redray start
--head``, and for ``ray.init(include_dashboard=True)`` on a private cluster.

The dashboard runs as ``redray dashboard`` in a process of its own (it is a
driver of the cluster, and the state API has one driver per process). The
address, with its password, and the secret travel in its environment, never
on its command line. Given an owner (the driver that started it), it stops
when that process exits, however that happens (``--owner-pid``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

from redray.node_launch import module_command
from redray.settings import Settings

#: the line ``redray dashboard`` prints once it listens
READY_PREFIX = "redray dashboard serving "


class DashboardStartError(RuntimeError):
    """The dashboard process did not come up; the message has the end of its log."""


def spawn(
    settings: Settings,
    host: str,
    port: int,
    log_path: Path,
    *,
    owner_pid: int | None = None,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redray dashboard`` for the cluster at ``settings``, detached,
    its output in ``log_path``; (the process, its ``http://`` URL) once it
    listens, or ``DashboardStartError``."""
    cmd = module_command(
        "redray.cli.main", "dashboard", "--host", host, "--port", str(port)
    )  # fmt: skip
    if owner_pid is not None:
        cmd += ["--owner-pid", str(owner_pid)]
    full_env = dict(os.environ if env is None else env)
    full_env["REDRAY_ADDRESS"] = settings.to_url()
    full_env.pop("REDRAY_SECRET_FILE", None)
    if settings.secret:
        full_env["REDRAY_SECRET"] = settings.secret
    else:
        full_env.pop("REDRAY_SECRET", None)
    with open(log_path, "ab") as log:
        start = log.tell()
        proc = subprocess.Popen(
            cmd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = _wait_ready(proc, log_path, start, timeout)
    if url is None:
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait()
        text = log_path.read_text(errors="replace")
        tail = "\n".join(text.strip().splitlines()[-10:])
        raise DashboardStartError(f"The dashboard did not start. The end of {log_path}:\n{tail}")
    return proc, url


def _wait_ready(
    proc: subprocess.Popen[bytes], log_path: Path, start: int, timeout: float
) -> str | None:
    """The URL of the dashboard's ready line; None if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), open(log_path, "rb") as log:
            log.seek(start)
            for raw in log.read().decode(errors="replace").splitlines():
                if raw.startswith(READY_PREFIX):
                    return raw[len(READY_PREFIX) :].split()[0]
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def host_port(url: str) -> str:
    """``http://H:P/`` as Ray shows a dashboard's address: ``H:P`` (a server
    bound to every interface is reached here on 127.0.0.1)."""
    host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
