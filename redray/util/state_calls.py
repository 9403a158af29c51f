"""Actor method calls that have not ended, for the state API: read from the
mailboxes (``actor:<id>:mbox``, a stream with consumer group ``actor``) of the
actors not dead.

A call still in its actor's mailbox has not ended: its entry is deleted by the
same ``complete.lua`` call that publishes its results. An entry the actor's
process has read (it is in the group's pending list) is ``RUNNING``, up to as
many as the actor runs at once (one for a synchronous actor, whose later
delivered calls are ``SUBMITTED_TO_WORKER`` until their turn); the others
wait, ``SUBMITTED_TO_WORKER``. Reading is passive: an entry that fails to open
is skipped here (the actor dead-letters it when it reads it).
"""

from __future__ import annotations

import json
from typing import Any

from .. import task_events
from .. import task_spec as ts
from ..constants import MAILBOX_GROUP
from ..runtime import Runtime
from .state_schema import TaskState
from .state_schema import text as _text

#: calls listed per actor, at most (a listing never reads a whole backlog)
PER_ACTOR = 1000
#: calls an async actor runs at once unless max_concurrency says (as in Ray)
ASYNC_DEFAULT = 1000


def live_actor_calls(rt: Runtime, actors: list[dict[str, Any]]) -> list[TaskState]:
    """The unended calls of ``actors`` (records as ``state._actor_records``
    gives them), oldest first per actor."""
    alive = [a for a in actors if a["state"] != "DEAD"]
    if not alive:
        return []
    pipe = rt.client.pipeline(transaction=False)
    pipe.hmget(rt.keys.task_spec, [a["_task"] or "-" for a in alive])
    for actor in alive:
        key = rt.keys.mailbox(actor["actor_id"])
        pipe.xrange(key, count=PER_ACTOR)
        pipe.xpending_range(key, MAILBOX_GROUP, min="-", max="+", count=PER_ACTOR)
    replies = pipe.execute(raise_on_error=False)
    creations, rest = replies[0], replies[1:]
    out: list[TaskState] = []
    for i, actor in enumerate(alive):
        listed, pending = rest[2 * i], rest[2 * i + 1]
        if isinstance(listed, Exception):
            continue
        delivered = (
            [] if isinstance(pending, Exception) else [_text(p["message_id"]) for p in pending]
        )
        at_once = _at_once(rt, actor["_task"], creations[i])
        running = set(delivered[:at_once])
        for entry_id, fields in listed:
            task = _call(rt, actor, fields)
            if task is not None:
                task.state = "RUNNING" if _text(entry_id) in running else "SUBMITTED_TO_WORKER"
                out.append(task)
    return out


def _call(rt: Runtime, actor: dict[str, Any], fields: dict[bytes, bytes]) -> TaskState | None:
    try:
        spec = ts.open_spec(rt.signer, bytes(fields.get(b"s", b"")), actor_id=actor["actor_id"])
    except ValueError:
        return None
    extra = spec.extra or {}
    short = task_events.short_name(spec.function_name)
    return TaskState(
        task_id=spec.task_id,
        name=str(extra.get("name") or short),
        job_id=spec.job_id,
        actor_id=actor["actor_id"],
        type="ACTOR_TASK",
        func_or_class_name=short,
        node_id=actor["node_id"] or None,
        worker_id=actor["_worker"] or None,
        worker_pid=actor["pid"],
        required_resources={},
        runtime_env_info={"serialized_runtime_env": json.dumps(extra.get("runtime_env") or {})},
    )


def _at_once(rt: Runtime, creation_id: str, creation: bytes | None) -> int:
    """How many calls the actor runs at once, from its creation spec."""
    if creation is None:
        return 1
    try:
        extra = ts.open_spec(rt.signer, bytes(creation), task_id=creation_id).extra or {}
    except ValueError:
        return 1
    groups = extra.get("concurrency_groups") or {}
    default = ASYNC_DEFAULT if extra.get("is_async") else 1
    base = int(extra.get("max_concurrency") or default)
    return base + sum(int(n) for n in groups.values() if isinstance(n, int))
