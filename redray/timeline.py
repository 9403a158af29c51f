"""``redray.timeline()``: the tasks that ended, as a Chrome trace (as
``ray.timeline()``): open the file in chrome://tracing or Perfetto.

One complete event (``"ph": "X"``) per task in the task-event stream
(``redray/task_events.py``: the last ~10,000 that ended, every job), on a
row per node (``pid``) and executor (``tid``). Times are the executors'
wall clocks, as the events record them.
"""

from __future__ import annotations

import json
from typing import Any

from . import session, task_events


def trace_events(events: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Chrome trace events of task-event records (oldest first)."""
    out: list[dict[str, Any]] = []
    for event in events:
        try:
            start, end = int(event["st"]), int(event["et"])
        except (KeyError, ValueError):
            continue  # a record without times: nothing to draw
        kind = "actor_task" if event.get("y") == "ACTOR_TASK" else "task"
        name = event.get("n") or event.get("f") or "?"
        out.append(
            {
                "cat": f"{kind}::{name}",
                "name": f"{kind}::{name}",
                "pid": f"Node {event.get('nd', '')}",
                "tid": f"Worker {event.get('w', '')} (pid {event.get('p', '')})",
                "ph": "X",
                "ts": start * 1000,  # microseconds
                "dur": max(end - start, 0) * 1000,
                "cname": "rail_load" if event.get("s") == task_events.FAILED else "generic_work",
                "args": {
                    "task_id": event.get("t", ""),
                    "job_id": event.get("j", ""),
                    "actor_id": event.get("a", "") or None,
                    "state": event.get("s", ""),
                    "error_type": event.get("e"),
                },
            }
        )
    out.sort(key=lambda e: int(e["ts"]))
    return out


def timeline(filename: str | None = None) -> list[dict[str, Any]] | None:
    """The tasks that ended, as Chrome trace events; with ``filename``, write
    them there as JSON (and return None), as Ray's ``timeline`` does."""
    runtime = session.current_runtime()
    events = trace_events(task_events.read(runtime.client, runtime.keys))
    if filename is None:
        return events
    with open(filename, "w") as handle:
        json.dump(events, handle)
    return None
