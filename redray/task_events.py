"""Task events: one record per task that ended, for the state API.

An executor adds the record (a JSON object, ``RPUSH {redray}:task:ended``,
and now and then an ``LTRIM`` to the cap: ``add``) to the batch that already
carries the task's ``complete.lua`` call, so the record costs no round trip of its own; an actor
adds the records of all the calls one batch publishes in one ``RPUSH``. (One
stream entry per call, as before, cost an actor some 15 µs a call, a fifth of
its time on a stream of calls.) The list is capped (``MAX_TASK_EVENTS``
records, all jobs together; ``REDRAY_TASK_EVENTS_MAX`` in a node's
environment overrides it) and outlives jobs, as Ray's task events outlive
theirs. Times are the executor's wall clock (display only;
liveness never reads them). A task submitted with
``enable_task_events=False`` carries ``"task_events": False`` in its spec's
``extra`` and leaves no record.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterable
from typing import Any

import redis

from .connections import Batch
from .constants import MAX_TASK_EVENTS, Keys
from .exceptions import RuntimeEnvSetupError, TaskCancelledError
from .serialization import KIND_ERROR, Serializer


@functools.cache
def cap() -> int:
    """Records the list keeps; read once per process, when the first task ends."""
    return int(os.environ.get("REDRAY_TASK_EVENTS_MAX") or MAX_TASK_EVENTS)


class _Untrimmed:
    """Records this process pushed since it last trimmed the list (None: it
    never did)."""

    count: int | None = None


def _slack() -> int:
    """Records a process may leave untrimmed: it trims the list once they
    would be more. An ``LTRIM`` with every push was one command in three of
    a task's batch, and reading its reply cost an executor some 3 us a task
    (about 2% of the 10k-task rate); the list then holds at most 1% of the
    cap more per process that pushes (exactly the cap below 100 records)."""
    return cap() // 100


#: An error message is cut to this many characters.
MESSAGE_LIMIT = 2_000
#: The spec ``extra`` flag of a task that asked for no events.
EXTRA_FLAG = "task_events"

FINISHED = "FINISHED"
FAILED = "FAILED"


def now_ms() -> int:
    """The executor's wall clock, in milliseconds (for display)."""
    return int(time.time() * 1000)


def short_name(function_name: str) -> str:
    """Ray's ``func_or_class_name`` (the qualified name without its module)
    from redray's ``module.qualname``: from the first ``<locals>`` scope's
    owner, else the last name (a class's method keeps its class)."""
    parts = function_name.split(".")
    if "<locals>" in parts:
        return ".".join(parts[max(parts.index("<locals>") - 1, 0) :])
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return ".".join(parts[-2:])
    return parts[-1]


def enabled(extra: dict[str, Any] | None) -> bool:
    return not extra or extra.get(EXTRA_FLAG, True) is not False


def error_of(serializer: Serializer, outcome: Iterable[tuple[int, bytes, list[Any]]]) -> Any:
    """The error a task's results carry, or None; decoded only on failure."""
    for _index, kind, frames in outcome:
        if kind == KIND_ERROR:
            try:
                return serializer.loads(frames)
            except Exception as exc:  # noqa: BLE001 - still a failure, described
                return exc
    return None


def error_type(error: Any) -> str:
    """Ray's ``ErrorType`` name for an error a task ended with."""
    if isinstance(error, TaskCancelledError):
        return "TASK_CANCELLED"
    if isinstance(error, RuntimeEnvSetupError):
        return "RUNTIME_ENV_SETUP_FAILED"
    return "TASK_EXECUTION_EXCEPTION"


def event(
    *,
    task_id: str,
    name: str,
    function: str,
    task_type: str,
    job_id: str,
    node_id: str,
    worker_id: str,
    pid: int,
    actor_id: str,
    start_ms: int,
    end_ms: int,
    shape: str,
    error: Any = None,
) -> dict[str, str]:
    """The record of one ended task."""
    fields = {
        "t": task_id,
        "n": name,
        "f": function,
        "y": task_type,
        "j": job_id,
        "nd": node_id,
        "w": worker_id,
        "p": str(pid),
        "a": actor_id,
        "s": FAILED if error is not None else FINISHED,
        "st": str(start_ms),
        "et": str(end_ms),
        "r": shape,
    }
    if error is not None:
        fields["e"] = error_type(error)
        fields["m"] = str(error)[:MESSAGE_LIMIT]
    return fields


def of_spec(
    spec: Any,
    *,
    task_type: str,
    where: tuple[str, str],
    actor_id: str = "",
    start_ms: int,
    shape: str = "",
    error: Any = None,
) -> dict[str, str]:
    """The record of ``spec``'s task (a ``TaskSpec``) ending now in this
    process, on ``where`` = (node id, executor id)."""
    function = short_name(spec.function_name)
    return event(
        task_id=spec.task_id,
        name=str((spec.extra or {}).get("name") or function),
        function=function,
        task_type=task_type,
        job_id=spec.job_id,
        node_id=where[0],
        worker_id=where[1],
        pid=os.getpid(),
        actor_id=actor_id,
        start_ms=start_ms,
        end_ms=now_ms(),
        shape=shape,
        error=error,
    )


def add(batch: Batch, keys: Keys, records: list[dict[str, str]]) -> None:
    """Queue ``records`` in ``batch`` (sent with the tasks' completions), and
    the trim to the cap once more than ``_slack()`` records would be left
    untrimmed (and in a process's first push)."""
    if records:
        encoded = [json.dumps(r, separators=(",", ":")) for r in records]
        batch.command("RPUSH", keys.task_events, *encoded)
        untrimmed = _Untrimmed.count
        if untrimmed is None or untrimmed + len(records) > _slack():
            batch.command("LTRIM", keys.task_events, -cap(), -1)
            _Untrimmed.count = 0
        else:
            _Untrimmed.count = untrimmed + len(records)


def read(client: redis.Redis, keys: Keys, count: int | None = None) -> list[dict[str, str]]:
    """The records, newest first (one per task: the newest record of a task
    wins); ``count`` bounds the records read. One that is not a JSON object of
    strings (written by something else) is skipped."""
    raw: Any = client.lrange(keys.task_events, 0 if count is None else -count, -1)
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for item in reversed(raw):
        try:
            fields = json.loads(item)
        except ValueError:
            continue
        if not isinstance(fields, dict):
            continue
        tid = fields.get("t", "")
        if isinstance(tid, str) and tid and tid not in seen:
            seen.add(tid)
            out.append({str(k): _text(v) for k, v in fields.items()})
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def shape_resources(shape: str, unit: int) -> dict[str, float]:
    """``CPU=10000,GPU=0`` (resource units) -> ``{"CPU": 1.0}``."""
    out: dict[str, float] = {}
    for part in shape.split(";")[0].split(","):
        name, _, units = part.partition("=")
        if name and units.isdigit() and int(units):
            out[name] = int(units) / unit
    return out
