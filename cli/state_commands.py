"""``redray list``, ``redray summary`` and ``redray get``: the state API
(``redray.util.state``) on the command line, as Ray's commands of those names.

* ``redray list tasks|actors|objects|nodes|jobs|workers [--filter key=value]...
  [--limit N] [--detail] [--format table|json|yaml]``
* ``redray summary tasks|actors|objects [--format table|json|yaml]``
* ``redray get task|actor ID [--format json|yaml]``

Each connects to ``--address`` (``REDRAY_ADDRESS``; the cluster ``redray
start`` started by default) as a short-lived driver; its own job and driver
are left out of ``list jobs`` and ``list workers``. ``yaml`` needs PyYAML.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import click
import redis

import redray
from redray import api
from redray.util import state
from redray.util.state_schema import DEFAULT_LIMIT, StateRecord

from .options import resolve

FORMATS = ("table", "json", "yaml")

LISTINGS: dict[str, tuple[Callable[..., list[Any]], type[StateRecord]]] = {
    "tasks": (state.list_tasks, state.TaskState),
    "actors": (state.list_actors, state.ActorState),
    "objects": (state.list_objects, state.ObjectState),
    "nodes": (state.list_nodes, state.NodeState),
    "jobs": (state.list_jobs, state.JobState),
    "workers": (state.list_workers, state.WorkerState),
}
SUMMARIES: dict[str, Callable[..., dict[str, Any]]] = {
    "tasks": state.summarize_tasks,
    "actors": state.summarize_actors,
    "objects": state.summarize_objects,
}
LOOKUPS: dict[str, Callable[..., Any]] = {"task": state.get_task, "actor": state.get_actor}


def _address_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--address",
        envvar="REDRAY_ADDRESS",
        help="The cluster's address [default: 'auto', the cluster `redray start` started].",
    )(fn)


def _format_option(default: str, choices: Sequence[str] = FORMATS) -> Callable[..., Any]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default,
        show_default=True,
        help="Output format (yaml needs PyYAML).",
    )


def _check_format(fmt: str) -> None:
    if fmt == "yaml":
        try:
            import yaml  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--format yaml needs PyYAML, which is not installed (pip install pyyaml); "
                "use --format json."
            ) from None


def _parse_filter(text: str) -> tuple[str, str, str]:
    for predicate in ("!=", "="):
        key, sep, value = text.partition(predicate)
        if sep and key.strip():
            return key.strip(), predicate, value.strip()
    raise click.BadParameter(f"{text!r} is not key=value or key!=value.", param_hint="--filter")


def _connected(address: str | None, read: Callable[[], Any]) -> tuple[Any, str, str]:
    """``read()`` while connected as a driver; (its result, the driver's job
    id and worker id)."""
    settings = resolve(address or "auto")
    try:
        redray.init(address=settings.to_url(), log_to_driver=False)
        runtime = api.current_runtime()
        return read(), runtime.job_id, runtime.worker_id
    except ValueError as exc:  # a filter the listing does not support
        raise click.UsageError(str(exc)) from None
    except (ConnectionError, redis.RedisError) as exc:
        raise click.ClickException(f"Could not read {settings.display}: {exc}") from None
    finally:
        if redray.is_initialized():
            redray.shutdown()


def _plain(value: Any) -> Any:
    if isinstance(value, StateRecord):
        return value.asdict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _dump(data: Any, fmt: str) -> str:
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(_plain(data), sort_keys=False)).rstrip()
    return json.dumps(_plain(data), indent=2, default=str)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned columns, headers in capitals (as Ray prints them)."""
    cells = [[c.upper() for c in columns]] + [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells)


@click.command("list")
@click.argument("resource", type=click.Choice(sorted(LISTINGS)))
@click.option(
    "--filter",
    "filters",
    multiple=True,
    help="key=value or key!=value; repeat to require several (values: case-insensitive).",
)
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True)
@click.option("--detail", is_flag=True, help="Every column, not only the main ones.")
@_format_option("table")
@_address_option
def list_command(
    resource: str,
    filters: tuple[str, ...],
    limit: int,
    detail: bool,
    fmt: str,
    address: str | None,
) -> None:
    """List the cluster's tasks, actors, objects, nodes, jobs or workers."""
    _check_format(fmt)
    parsed = [_parse_filter(f) for f in filters]
    listing, schema = LISTINGS[resource]
    # one more than asked: the command's own driver may be in it, and is left out
    got, job_id, worker_id = _connected(
        address, lambda: listing(filters=parsed, limit=limit + 1, detail=detail)
    )
    own = {"jobs": ("job_id", job_id), "workers": ("worker_id", worker_id)}.get(resource)
    if own is not None:
        got = [r for r in got if r[own[0]] != own[1]]
    got = got[:limit]
    if fmt != "table":
        click.echo(_dump(got, fmt))
        return
    if not got:
        click.echo(f"No {resource} found.")
        return
    click.echo(table([r.asdict() for r in got], schema.list_columns(detail=detail)))


@click.command("summary")
@click.argument("resource", type=click.Choice(sorted(SUMMARIES)))
@_format_option("table")
@_address_option
def summary_command(resource: str, fmt: str, address: str | None) -> None:
    """Summarize the cluster's tasks (per function), actors (per class) or objects."""
    _check_format(fmt)
    got, _job, _worker = _connected(address, SUMMARIES[resource])
    if fmt != "table":
        click.echo(_dump(got, fmt))
        return
    cluster = got["cluster"]
    totals = {k: v for k, v in cluster.items() if k.startswith("total")}
    click.echo("  ".join(f"{k}: {v}" for k, v in totals.items()))
    rows = [{"key": key, **entry} for key, entry in cluster["summary"].items()]
    if rows:
        columns = [c for c in rows[0] if c != "key"] if resource != "objects" else list(rows[0])
        click.echo(table(rows, columns))


@click.command("get")
@click.argument("resource", type=click.Choice(sorted(LOOKUPS)))
@click.argument("ident", metavar="ID")
@_format_option("json", ("json", "yaml"))
@_address_option
def get_command(resource: str, ident: str, fmt: str, address: str | None) -> None:
    """Show one task or actor by its id."""
    _check_format(fmt)
    got, _job, _worker = _connected(address, lambda: LOOKUPS[resource](ident))
    if got is None:
        raise click.ClickException(f"No {resource} {ident} found.")
    click.echo(_dump(got, fmt))


@click.command("timeline")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the trace to this file [default: print it].",
)
@_address_option
def timeline_command(output: str | None, address: str | None) -> None:
    """The tasks that ended, as a Chrome trace (chrome://tracing, Perfetto),
    as ``redray.timeline()`` gives it."""
    got, _job, _worker = _connected(address, redray.timeline)
    if output is None:
        click.echo(json.dumps(got))
        return
    with open(output, "w") as handle:
        json.dump(got, handle)
    click.echo(f"Wrote {len(got)} task events to {output}.")


def _mib(size: int) -> str:
    return f"{size / 2**20:.2f} MiB"


@click.command("memory")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@_address_option
def memory_command(limit: int, address: str | None) -> None:
    """The objects the cluster holds in Redis, by owner (job) and size: each
    job's total, then the largest objects."""
    objects, _job, _worker = _connected(address, lambda: state.list_objects(limit=1_000_000))
    if not objects:
        click.echo("No objects are held.")
        return
    per_job: dict[str, list[int]] = {}
    for obj in objects:
        per_job.setdefault(obj.job_id or "?", []).append(obj.object_size or 0)
    total = sum(sum(sizes) for sizes in per_job.values())
    click.echo(f"{len(objects)} objects, {_mib(total)} in all")
    rows = [
        {"job_id": job, "objects": len(sizes), "size": _mib(sum(sizes))}
        for job, sizes in sorted(per_job.items(), key=lambda item: -sum(item[1]))
    ]
    click.echo(table(rows, ["job_id", "objects", "size"]))
    largest = sorted(objects, key=lambda o: -(o.object_size or 0))[:limit]
    click.echo(f"\nThe {len(largest)} largest:")
    click.echo(
        table(
            [{**o.asdict(), "size": _mib(o.object_size or 0)} for o in largest],
            ["object_id", "size", "job_id", "type"],
        )
    )


def register(cli: click.Group) -> None:
    """Add ``list``, ``summary``, ``get``, ``timeline`` and ``memory`` to the
    ``redray`` command."""
    for command in (list_command, summary_command, get_command, timeline_command, memory_command):
        cli.add_command(command)
