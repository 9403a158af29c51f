"""How actors end: final death (fail every queued call), restart, job end.

Used by the node agent (an actor's process exited), by ``kill`` (an actor
that was never placed) and by job cleanup (non-detached actors die with
their job).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .actor import death_record, fail_call
from .exceptions import ActorDiedError, ActorOutOfMemoryError
from .scripts import NO_OWNER

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)

#: Seconds a dead detached actor's record (and death cause) is kept.
DEAD_RECORD_TTL = 3600


def actor_info(runtime: Runtime, actor_id: str) -> dict[str, str]:
    """The actor's record as text (without its binary death record)."""
    raw: dict[bytes, bytes] = runtime.client.hgetall(runtime.keys.actor(actor_id))  # type: ignore[assignment]
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items() if k != b"death"}


def finalize(
    runtime: Runtime, actor_id: str, error: BaseException, *, node_id: str = "", task_id: str = ""
) -> None:
    """The actor is dead for good: record why, fail its queued calls, release
    its resources and forget its creation task. Idempotent.

    ``node_id`` and ``task_id`` name where its process ran and its creation
    task when the caller knows them: the record may not say (the actor died in
    ``__init__``) or may be gone (deleted with its job while the process lived),
    and the reservation must be given back either way.
    """
    keys = runtime.keys
    info = actor_info(runtime, actor_id)
    if info:
        record = death_record(runtime, error)
        runtime.scripts.actor_dead(
            actor_id=actor_id,
            job_id=info.get("job", ""),
            death=record,
            name_key=info.get("name_key", ""),
        )
        # the stored record wins if the actor was already dead (first cause kept)
        stored: Any = runtime.client.hget(keys.actor(actor_id), "death") or record
        mailbox = keys.mailbox(actor_id)
        while True:
            entries: Any = runtime.client.xrange(mailbox, "-", "+", count=500)
            if not entries:
                break
            for _entry_id, fields in entries:
                spec = fields.get(b"s")
                if spec:
                    fail_call(runtime, spec, stored)
            runtime.client.xdel(mailbox, *[e for e, _ in entries])
        runtime.client.delete(mailbox)
        if info.get("detached") == "1":
            # no job deletes a detached actor's record: keep it a while so late
            # calls still get its death cause, then let it go
            runtime.client.expire(keys.actor(actor_id), DEAD_RECORD_TTL)
    task_id = task_id or info.get("task", "")
    node = node_id or info.get("node", "")
    if not task_id:
        return
    reservation = ""
    if node:
        raw: Any = runtime.client.hget(keys.node_running(node), task_id)
        reservation = raw.decode() if raw else ""
    runtime.scripts.complete(
        task_id=task_id,
        job_id=info.get("job", ""),
        owner=NO_OWNER,
        node_id=node or None,
        reservation=reservation,
        returns=[],
    )


def end_actor(runtime: Runtime, actor_id: str, why: str) -> None:
    """Kill an actor for good (``redray.kill``, the end of its job): mark it
    dead with ``ActorDiedError("The actor <class> (<id>) <why>.")``, then have
    its node kill its process, or dequeue it if it has none. The node's
    handling of the exit (``process_exited``) does the rest."""
    info = actor_info(runtime, actor_id)
    if not info:
        return
    error = ActorDiedError(f"The actor {info.get('class_name')} ({actor_id}) {why}.")
    state, node, worker = runtime.scripts.actor_dead(
        actor_id=actor_id,
        job_id=info.get("job", ""),
        death=death_record(runtime, error),
        name_key=info.get("name_key", ""),
    )
    if state == "DEAD":
        return
    if node and worker:
        runtime.client.publish(runtime.keys.control_channel(node), f"kill {worker}")
    else:
        finish_unplaced(runtime, actor_id)


def finish_unplaced(runtime: Runtime, actor_id: str) -> None:
    """Kill an actor whose creation task has not run: dequeue it, then finalize."""
    info = actor_info(runtime, actor_id)
    task_id = info.get("task", "")
    if task_id:
        runtime.scripts.cancel(task_id)
    finalize(
        runtime,
        actor_id,
        ActorDiedError(
            f"The actor {info.get('class_name')} ({actor_id}) was killed before it started."
        ),
    )


def process_exited(
    runtime: Runtime,
    node_id: str,
    actor_id: str,
    how: str,
    task_id: str = "",
    memory: tuple[int, int] | None = None,
) -> None:
    """An actor's process on ``node_id`` is gone: restart it or finalize it.
    ``task_id`` is its creation task, when the caller knows it; ``memory`` is
    (used, allowed) when its node killed it for outgrowing ``memory=``."""
    keys = runtime.keys
    info = actor_info(runtime, actor_id)
    cls = info.get("class_name", "?")
    if not info or info.get("state") == "DEAD":
        err = ActorDiedError(f"The actor {cls} ({actor_id}) is dead.")
        finalize(runtime, actor_id, err, node_id=node_id, task_id=task_id)
        return
    task_id = info.get("task", "") or task_id
    max_restarts = int(info.get("max_restarts", "0") or 0)
    requeued = (
        runtime.scripts.requeue(node_id, task_id, max_restarts, info.get("shape", ""))
        if task_id
        else 0
    )
    if requeued == 1:
        # the next incarnation fails the calls that ran out of retries with this cause
        runtime.client.hset(
            keys.actor(actor_id),
            mapping={
                "state": "RESTARTING",
                "node": "",
                "worker": "",
                "exit": how,
                "exit_oom": "1" if memory else "",
            },
        )
        log.warning("actor %s (%s) died (%s); restarting it", cls, actor_id, how)
        return
    death = ActorOutOfMemoryError if memory else ActorDiedError
    finalize(
        runtime,
        actor_id,
        death(
            f"The actor {cls} ({actor_id}) died unexpectedly ({how}) and has no restarts left "
            f"(max_restarts={max_restarts})."
        ),
        node_id=node_id,
        task_id=task_id,
    )


def kill_job_actors(runtime: Runtime, job_id: str) -> None:
    """Non-detached actors end with the job that created them."""
    keys = runtime.keys
    members: Any = runtime.client.smembers(keys.job_actors(job_id))
    for raw in members:
        end_actor(runtime, raw.decode(), f"ended with its job {job_id}")
    runtime.client.delete(keys.job_actors(job_id))
