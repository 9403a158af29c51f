"""``redray logs``: what tasks and actors printed, read back from Redis.

Each job's output is in its log stream (``Keys.job_logs``, written by
workers/output.py): the last ``STREAM_MAXLEN`` entries, kept while the job
runs and for ``redray.jobs.LOG_KEEP_S`` after it ends. The node's log file keeps
everything its tasks printed for longer.
"""

from __future__ import annotations

from typing import Any

import click
import redis

from redray.constants import Keys
from redray.identity import node_ip
from redray.log_stream import Line, decode_entries

from .options import resolve


def _streams(client: redis.Redis, keys: Keys, job_id: str | None) -> list[str]:
    if job_id:
        return [keys.job_logs(job_id)]
    # the running jobs (no SCAN: the cluster's user may not list other keys)
    live: Any = client.hkeys(keys.jobs)
    return [keys.job_logs(j.decode() if isinstance(j, bytes) else str(j)) for j in sorted(live)]


def _matches(line: Line, task: str | None, actor: str | None, node: str | None) -> bool:
    return (
        (task is None or line.task_id == task)
        and (actor is None or line.actor_id == actor)
        and (node is None or line.node_id == node)
    )


@click.command("logs")
@click.argument("job_id", required=False)
@click.option("--task", "task_id", help="Only the output of this task (its id, in hex).")
@click.option("--actor", "actor_id", help="Only the output of this actor (its id, in hex).")
@click.option("--node", "node_id", help="Only the output of tasks that ran on this node.")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
@click.option(
    "--address",
    envvar="REDRAY_ADDRESS",
    help="The cluster's address [default: 'auto', the cluster `redray start` started].",
)
def logs_command(
    job_id: str | None,
    task_id: str | None,
    actor_id: str | None,
    node_id: str | None,
    tail: int | None,
    address: str | None,
) -> None:
    """Print what the tasks and actors of JOB_ID (default: every running
    job) printed, prefixed as the driver shows it. A finished job's output is
    kept 10 minutes: give its id."""
    settings = resolve(address or "auto")
    keys = Keys(settings.prefix)
    client = settings.client()
    lines: list[tuple[str, Line]] = []
    try:
        for key in _streams(client, keys, job_id):
            reply: Any = client.xrange(key)
            for entry_id, fields in decode_entries(reply):
                line = Line.from_fields(fields)
                if _matches(line, task_id, actor_id, node_id):
                    lines.append((entry_id, line))
    except redis.RedisError as exc:
        raise click.ClickException(f"Could not read {settings.display}: {exc}") from None
    finally:
        client.close()
    if not lines:
        click.echo("No output kept for that.", err=True)
        return
    # stream ids are the server's milliseconds: one order across jobs
    lines.sort(key=lambda item: tuple(int(part) for part in item[0].split("-")))
    here = node_ip()
    for _, line in lines[-tail:] if tail else lines:
        click.echo(f"{line.prefix(here)} {line.text}", err=line.kind == "err")
