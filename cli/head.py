"""``redray start``'s work: launching a head (a Redis server and a node) or a
node that joins a cluster, detached from the terminal, and waiting until
each is up."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import click
import psutil
import redis

from redray import acl, api
from redray.constants import DEFAULT_PREFIX
from redray.dashboard import launch
from redray.dashboard.server import is_loopback
from redray.node_launch import NodeStartError, module_command, spawn_node, wait_node_ready
from redray.server import start_server
from redray.settings import Settings
from redray.workers.node import NodeConfig

from .credentials import CLUSTER_USER, shown
from .dashboard_command import TOKEN_ENV
from .processes import (
    child_env,
    describe,
    entry_for,
    forget,
    live_process,
    log_tail,
    new_session_dir,
    read_state,
    record,
    stop_entries,
    write_address,
    write_atomic,
)

#: how ``start`` hands the head's password to ``launch-server``
SERVER_PASSWORD_ENV = "REDRAY_SERVER_PASSWORD"


@dataclasses.dataclass(frozen=True)
class HeadServer:
    """How ``start --head`` runs its Redis server."""

    host: str
    port: int
    password: str
    binary: str | None
    appendonly: bool


@dataclasses.dataclass(frozen=True)
class DashboardConfig:
    """Where ``start --head`` serves its dashboard (the token, if any, comes
    from REDRAY_DASHBOARD_TOKEN in the environment, never from argv)."""

    host: str
    port: int

    def check(self) -> None:
        if not is_loopback(self.host) and not os.environ.get(TOKEN_ENV):
            raise click.UsageError(
                f"--dashboard-host {self.host} needs {TOKEN_ENV} in the environment (cluster "
                "state is user data), or pass --include-dashboard false."
            )


def running_head() -> dict[str, Any] | None:
    for entry in read_state():
        if entry.get("kind") == "server" and live_process(entry) is not None:
            return entry
    return None


def start_head(
    node: NodeConfig,
    head: HeadServer,
    secret: str,
    timeout: float,
    dashboard: DashboardConfig | None = None,
) -> None:
    if dashboard is not None:
        dashboard.check()
    running = running_head()
    if running is not None:
        raise click.ClickException(
            f"redray is already running on this machine at {shown(running.get('address'))} "
            f"({describe(running)}); run `redray stop` first."
        )
    session = new_session_dir()
    started: list[dict[str, Any]] = []
    try:
        server = _launch_server(session, head, timeout)
        started.append(server)
        settings = Settings.from_url(server["address"], secret=secret)
        node_entry = _launch_node(node, settings, session, timeout)
        started.append(node_entry)
    except BaseException:
        _undo(started)
        raise
    address = server["address"]
    write_address(address)
    write_atomic(api.secret_file(), secret + "\n")
    api.dashboard_file().unlink(missing_ok=True)
    board = None if dashboard is None else _launch_dashboard(dashboard, settings, session, timeout)
    where = api.address_file()
    click.echo(f"Started a redray head: {describe(server)} and {describe(node_entry)}.")
    click.echo(f"Logs: {session / 'logs'}")
    if board is not None:
        click.echo(f"Dashboard: {board['url']} (pid {board['pid']})")
    click.echo("")
    click.echo(f"Cluster address: {shown(address)} (password protected)")
    click.echo(f"The address with its password is in {where} (readable by you only),")
    click.echo(f"and the secret that signs every payload in {api.secret_file()}.")
    click.echo("")
    click.echo("Next steps")
    click.echo("  To add a node on this machine, run (background or foreground)")
    click.echo("    redray start --address=auto")
    click.echo("    redray worker --address=auto")
    click.echo("  To add a node on another machine, copy both files there (e.g. with scp) and")
    click.echo("  hand them over in the environment, not on a command line:")
    click.echo(
        f'    REDRAY_ADDRESS="$(cat {where.name})" '
        f'REDRAY_SECRET="$(cat {api.secret_file().name})" redray worker'
    )
    click.echo("  To connect to this cluster from Python:")
    click.echo("    import redray")
    click.echo('    redray.init(address="auto")')
    click.echo("  To see the cluster's nodes and resources:")
    click.echo("    redray status")
    click.echo("  To stop what `redray start` started on this machine:")
    click.echo("    redray stop")


def start_joined(node: NodeConfig, settings: Settings, timeout: float) -> None:
    client = settings.client()
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"Could not reach the redray Redis server at {settings.display}: {exc}"
        ) from None
    finally:
        client.close()
    session = new_session_dir()
    entry = _launch_node(node, settings, session, timeout)
    write_address(settings.to_url(), overwrite=False)
    click.echo(f"Started {describe(entry)} in the cluster at {settings.display}.")
    click.echo(f"Logs: {session / 'logs'}")
    click.echo("To stop it (and whatever else `redray start` started here): redray stop")


def _launch_dashboard(
    config: DashboardConfig, settings: Settings, session: Path, timeout: float
) -> dict[str, Any] | None:
    """Start ``redray dashboard`` in a session of its own and wait until it
    listens; None, with a warning, if it does not (the cluster runs on
    without it, as Ray's does)."""
    log_path = session / "logs" / "dashboard.log"
    try:
        proc, url = launch.spawn(
            settings, config.host, config.port, log_path, timeout=timeout, env=child_env()
        )
    except launch.DashboardStartError as exc:
        click.echo(f"Warning: {exc}\nThe cluster runs without a dashboard.", err=True)
        return None
    try:
        entry = entry_for(proc.pid, "dashboard", url=url, log=str(log_path))
    except psutil.NoSuchProcess:
        return None
    record(entry)
    # what `init()` shows as ``dashboard_url``: host:port, as Ray gives it
    write_atomic(api.dashboard_file(), launch.host_port(url) + "\n")
    return entry


def _undo(started: list[dict[str, Any]]) -> None:
    """Stop what a failed ``start`` had started (nodes before the server)."""
    ordered = sorted(started, key=lambda e: e.get("kind") != "node")
    with contextlib.suppress(Exception):
        stop_entries(ordered, force=False, grace=10.0)
    forget(started)


def _launch_server(session: Path, head: HeadServer, timeout: float) -> dict[str, Any]:
    """Start the head's server in a session of its own (through ``launch-server``;
    the password travels in its environment, not on its command line)."""
    logs = session / "logs"
    cmd = module_command(
        "redray.cli.main", "launch-server",
        "--host", head.host,
        "--port", str(head.port),
        "--dir", str(session / "redis_data"),
        "--logfile", str(logs / "redis-server.log"),
        "--timeout", str(timeout),
    )  # fmt: skip
    if head.binary:
        cmd += ["--redis-server", head.binary]
    if head.appendonly:
        cmd.append("--appendonly")
    err_path = logs / "redis-server-launcher.err"
    env = child_env()
    env[SERVER_PASSWORD_ENV] = head.password
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        out, _ = proc.communicate(timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise click.ClickException(
            f"The Redis server did not start within {timeout} s; see {logs}."
        ) from None
    lines = out.decode(errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, ValueError):
        reply = {"error": f"its launcher exited with code {proc.returncode}:\n{log_tail(err_path)}"}
    if "error" in reply:
        raise click.ClickException(f"Could not start the Redis server: {reply['error']}")
    advertised = head.host
    if head.host in ("0.0.0.0", "::", ""):
        try:
            advertised = socket.gethostbyname(socket.gethostname())
        except OSError:
            advertised = "127.0.0.1"
    address = Settings(
        host=advertised, port=int(reply["port"]), username=CLUSTER_USER, password=head.password
    ).to_url()
    try:
        entry = entry_for(int(reply["pid"]), "server", address=address, session_dir=str(session))
    except psutil.NoSuchProcess:
        raise click.ClickException(
            f"The Redis server exited right after it started; see {logs}."
        ) from None
    record(entry)
    return entry


def _launch_node(
    node: NodeConfig, settings: Settings, session: Path, timeout: float
) -> dict[str, Any]:
    """Start a node agent in a session of its own and wait until it is up."""
    node_id = uuid.uuid4().hex[:16]
    config = dataclasses.replace(
        node, address=settings.to_url(), node_id=node_id, secret=settings.secret
    )
    log_path = session / "logs" / f"node-{node_id}.log"
    with open(log_path, "ab") as log:
        proc = spawn_node(
            dataclasses.asdict(config), env=child_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        entry = entry_for(
            proc.pid, "node", node_id=node_id, address=settings.to_url(), log=str(log_path)
        )
    except psutil.NoSuchProcess:
        entry = {"pid": proc.pid, "kind": "node", "create_time": None}
    else:
        record(entry)
    try:
        _wait_node(settings, node_id, proc, timeout, log_path)
    except BaseException:
        _undo([entry])
        raise
    return entry


def _wait_node(
    settings: Settings,
    node_id: str,
    proc: subprocess.Popen[bytes],
    timeout: float,
    log_path: Path,
) -> None:
    try:
        wait_node_ready(settings, node_id, proc, timeout)
    except NodeStartError as exc:
        if exc.exit_code is not None:
            raise click.ClickException(
                f"The node exited with code {exc.exit_code} before it was up. "
                f"The end of its log {log_path}:\n{log_tail(log_path)}"
            ) from None
        if exc.redis_error is not None:
            raise click.ClickException(
                f"Lost the Redis server at {settings.display} while the node started: "
                f"{exc.redis_error}"
            ) from None
        raise click.ClickException(
            f"The node did not come up within {timeout} s. The end of its log {log_path}:\n"
            f"{log_tail(log_path)}"
        ) from None


@click.command("launch-server", hidden=True)
@click.option("--host", default="127.0.0.1")
@click.option("--port", type=int, required=True)
@click.option("--dir", "directory", required=True)
@click.option("--logfile", required=True)
@click.option("--redis-server", default=None)
@click.option("--appendonly", is_flag=True)
@click.option("--timeout", type=float, default=10.0)
def launch_server(
    host: str,
    port: int,
    directory: str,
    logfile: str,
    redis_server: str | None,
    appendonly: bool,
    timeout: float,
) -> None:
    """Start a server, print {"pid", "port"} as JSON and exit, leaving the server running.

    ``start`` runs this in a new session, so the server is detached from the
    terminal and from ``start``'s process group. The password, if any, comes
    in the environment (``REDRAY_SERVER_PASSWORD``).
    """
    # The cluster's user gets the password from `start`, limited to the
    # cluster's keys and redray's commands; the server's default (admin) user
    # gets a random one that only this launcher knows.
    password = os.environ.get(SERVER_PASSWORD_ENV) or None
    admin = secrets.token_hex(24) if password is not None else None
    users = [acl.config_line(CLUSTER_USER, DEFAULT_PREFIX, password)] if password else []
    try:
        server = start_server(
            binary=redis_server,
            host=host,
            port=port,
            directory=directory,
            appendonly=appendonly,
            extra_args=["--logfile", logfile],
            timeout=timeout,
            password=admin,
            users=users,
        )
    except (RuntimeError, OSError) as exc:
        message = str(exc)
        tail = log_tail(logfile, 5)
        if tail:
            message += f"\n{tail}"
        click.echo(json.dumps({"error": message}))
        sys.exit(1)
    # start_server() is content with any answer to PING on the port: make sure
    # the answer came from our server, not from another one that holds the port
    client = redis.Redis(host=server.host, port=server.port, password=admin, socket_timeout=5)
    try:
        answering = int(client.info("server").get("process_id", -1))
    except redis.RedisError as exc:
        answering = -1
        server.stop()
        click.echo(json.dumps({"error": f"The new server does not answer: {exc}"}))
        sys.exit(1)
    finally:
        client.close()
    if answering != server.pid:
        server.stop()
        tail = log_tail(logfile, 5)
        click.echo(
            json.dumps(
                {
                    "error": f"port {server.port} is already in use (by the Redis server "
                    f"with pid {answering})" + (f"\n{tail}" if tail else "")
                }
            )
        )
        sys.exit(1)
    click.echo(json.dumps({"pid": server.pid, "port": server.port}))
