"""``redray dashboard``: serve the cluster's dashboard in the foreground.

``redray dashboard [--address URL] [--host 127.0.0.1] [--port 8265]
[--secret-file F] [--token T]`` (also REDRAY_ADDRESS, REDRAY_DASHBOARD_HOST,
REDRAY_DASHBOARD_PORT, REDRAY_DASHBOARD_TOKEN) serves until SIGTERM or
Ctrl-C, then disconnects its driver and exits. A non-loopback ``--host``
needs a token. An address without a password takes ``REDRAY_PASSWORD``
from the environment (as every command does), so that a container can keep
it out of argv.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from types import FrameType

import click

from redray.dashboard.launch import READY_PREFIX
from redray.dashboard.server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer
from redray.jobs import process_started

from .credentials import secret_option
from .options import resolve

TOKEN_ENV = "REDRAY_DASHBOARD_TOKEN"


@click.command("dashboard")
@click.option(
    "--address",
    envvar="REDRAY_ADDRESS",
    help="The cluster's address [default: 'auto', the cluster `redray start` started].",
)
@click.option(
    "--host",
    default=DEFAULT_HOST,
    show_default=True,
    envvar="REDRAY_DASHBOARD_HOST",
    help="Interface to listen on; any but a loopback one needs a token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="REDRAY_DASHBOARD_PORT",
    help="Port to listen on (0: a free one).",
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    help="Require this token on every request (HTTP Basic password, or Bearer). Prefer "
    "REDRAY_DASHBOARD_TOKEN: a command line is visible in `ps`.",
)
@secret_option
@click.option("--owner-pid", type=int, hidden=True, help="Stop when this process exits.")
def dashboard_command(
    address: str | None,
    host: str,
    port: int,
    token: str | None,
    secret_file: str | None,
    owner_pid: int | None,
) -> None:
    """Serve a live web page of the cluster's nodes, tasks, actors, jobs,
    objects, queues and dead letters, until SIGTERM or Ctrl-C."""
    settings = resolve(address or "auto", secret_file=secret_file)
    logging.basicConfig(
        level=logging.WARNING, format="(redray dashboard) %(levelname)s %(message)s"
    )
    try:
        server = DashboardServer(settings, host, port, token)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"Could not listen on {host}:{port}: {exc}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if owner_pid is not None:
        threading.Thread(
            target=_watch_owner, args=(owner_pid, server), name="redray-owner", daemon=True
        ).start()
    click.echo(f"{READY_PREFIX}{server.url} for {settings.display}")
    sys.stdout.flush()
    try:
        server.serve_forever()
    finally:
        server.close()
    click.echo("redray dashboard stopped.", err=True)


def _watch_owner(pid: int, server: DashboardServer) -> None:
    """Stop the dashboard once the driver that started it is gone (its
    private cluster goes with it), even if that driver was killed."""
    started = process_started(pid)
    while started is not None and process_started(pid) == started:
        time.sleep(0.5)
    server.stop()
