"""How actors end: final death (fail every queued call), restart, job end.

Used by the node agent (an actor's process exited), by ``kill`` (an actor
that was never placed), by the actor process itself (``__init__`` failed,
``__ray_terminate__``) and by job cleanup (non-detached actors die with
their job).
"""

from __future__ import annotations

import logging
from typing import Any

from . import control
from .actor_records import death_record, fail_call
from .cluster import Cluster
from .exceptions import ActorDiedError, ActorOutOfMemoryError
from .scripts import NO_OWNER, parse_record

log = logging.getLogger(__name__)

#: Seconds a dead detached actor's record (and death cause) is kept.
DEAD_RECORD_TTL = 3600


def actor_info(cluster: Cluster, actor_id: str) -> dict[str, str]:
    """The actor's record as text (without its binary death record)."""
    raw: dict[bytes, bytes] = cluster.client.hgetall(cluster.keys.actor(actor_id))  # type: ignore[assignment]
    return {k.decode(): v.decode(errors="replace") for k, v in raw.items() if k != b"death"}


def finalize(
    cluster: Cluster,
    actor_id: str,
    error: BaseException,
    *,
    node_id: str = "",
    task_id: str = "",
    worker_id: str = "",
) -> None:
    """The actor is dead for good: record why, fail its queued calls, release
    its resources and forget its creation task. Idempotent.

    ``node_id``, ``task_id`` and ``worker_id`` name where its process ran,
    its creation task and its process when the caller knows them: the record
    may not say (the actor died in ``__init__``) or may be gone (deleted with
    its job while the process lived), and the reservation must be given back
    either way.
    """
    keys = cluster.keys
    client = cluster.client
    info = actor_info(cluster, actor_id)
    if info:
        record = death_record(cluster.error_frames, cluster.signer, actor_id, error)
        cluster.scripts.actor_dead(
            actor_id=actor_id,
            job_id=info.get("job", ""),
            death=record,
            name_key=info.get("name_key", ""),
        )
        # the stored record wins if the actor was already dead (first cause kept)
        stored: Any = client.hget(keys.actor(actor_id), "death") or record
        mailbox = keys.mailbox(actor_id)
        while True:
            entries: Any = client.xrange(mailbox, "-", "+", count=500)
            if not entries:
                break
            for entry_id, fields in entries:
                spec = fields.get(b"s")
                if spec:
                    # publishes the failure and deletes the entry in one step
                    fail_call(
                        cluster.scripts,
                        cluster.error_frames,
                        cluster.signer,
                        spec,
                        stored,
                        actor_id=actor_id,
                        entry_id=entry_id.decode(),
                    )
                else:
                    client.xdel(mailbox, entry_id)
        client.delete(mailbox, keys.actor_cancelled(actor_id))
        if info.get("detached") == "1":
            # no job deletes a detached actor's record: keep it a while so late
            # calls still get its death cause, then let it go
            client.expire(keys.actor(actor_id), DEAD_RECORD_TTL)
    task_id = task_id or info.get("task", "")
    node = node_id or info.get("node", "")
    if not task_id:
        return
    worker = worker_id or info.get("worker", "")
    if node and not worker:
        held = parse_record(client.hget(keys.node_running(node), task_id))
        worker = held.worker if held else ""
    # releases the reservation the creation task still holds (read from its record)
    cluster.scripts.complete(
        task_id=task_id,
        job_id=info.get("job", ""),
        owner=NO_OWNER,
        node_id=node or None,
        returns=[],
        worker_id=worker,
        retry=True,
    )


def end_actor(cluster: Cluster, actor_id: str, why: str) -> None:
    """Kill an actor for good (``redray.kill``, the end of its job): mark it
    dead with ``ActorDiedError("The actor <class> (<id>) <why>.")``, then have
    its node kill its process, or dequeue it if it has none. The node's
    handling of the exit (``process_exited``) does the rest."""
    info = actor_info(cluster, actor_id)
    if not info:
        return
    error = ActorDiedError(
        f"The actor {info.get('class_name')} ({actor_id}) {why}.", actor_id=actor_id
    )
    state, node, worker = cluster.scripts.actor_dead(
        actor_id=actor_id,
        job_id=info.get("job", ""),
        death=death_record(cluster.error_frames, cluster.signer, actor_id, error),
        name_key=info.get("name_key", ""),
    )
    if state == "DEAD":
        return
    if node and worker:
        control.kill(cluster, node, worker)
    else:
        finish_unplaced(cluster, actor_id)


def finish_unplaced(cluster: Cluster, actor_id: str) -> None:
    """Kill an actor whose creation task has not run: dequeue it, then finalize."""
    info = actor_info(cluster, actor_id)
    task_id = info.get("task", "")
    if task_id:
        cluster.scripts.cancel(task_id, cluster.scripts.known_shapes())
    finalize(
        cluster,
        actor_id,
        ActorDiedError(
            f"The actor {info.get('class_name')} ({actor_id}) was killed before it started.",
            actor_id=actor_id,
        ),
    )


def process_exited(
    cluster: Cluster,
    node_id: str,
    actor_id: str,
    how: str,
    task_id: str = "",
    memory: tuple[int, int] | None = None,
    worker_id: str = "",
) -> None:
    """An actor's process on ``node_id`` is gone: restart it or finalize it.
    ``task_id`` is its creation task and ``worker_id`` its process, when the
    caller knows them; ``memory`` is (used, allowed) when its node killed it
    for outgrowing ``memory=``."""
    keys = cluster.keys
    info = actor_info(cluster, actor_id)
    cls = info.get("class_name", "?")
    if not info or info.get("state") == "DEAD":
        err = ActorDiedError(f"The actor {cls} ({actor_id}) is dead.", actor_id=actor_id)
        finalize(cluster, actor_id, err, node_id=node_id, task_id=task_id, worker_id=worker_id)
        return
    task_id = info.get("task", "") or task_id
    max_restarts = int(info.get("max_restarts", "0") or 0)
    requeued = 0
    if task_id:
        held = parse_record(cluster.client.hget(keys.node_running(node_id), task_id))
        worker = worker_id or (held.worker if held else "")
        requeued = cluster.scripts.requeue(
            node_id, task_id, worker, max_restarts, info.get("shape", "") or "CPU=10000"
        )
    if requeued == 1:
        # the next incarnation fails the calls that ran out of retries with this cause
        cluster.scripts.actor_restarting(actor_id, how, memory is not None)
        log.warning("actor %s (%s) died (%s); restarting it", cls, actor_id, how)
        return
    if requeued == -1 and not_its_process(info, node_id, worker_id):
        # an earlier incarnation: its node was declared dead and the actor
        # restarted without it (the node kills it on coming back), or this
        # exit was handled already. The actor lives on, or restarts: leave it
        return
    death = ActorOutOfMemoryError if memory else ActorDiedError
    finalize(
        cluster,
        actor_id,
        death(
            f"The actor {cls} ({actor_id}) died unexpectedly ({how}) and has no restarts left "
            f"(max_restarts={max_restarts}).",
            actor_id=actor_id,
        ),
        node_id=node_id,
        task_id=task_id,
        worker_id=worker_id,
    )


def not_its_process(info: dict[str, str], node_id: str, worker_id: str) -> bool:
    """Whether the actor's record says its process is not ``worker_id`` on
    ``node_id``: a restart is queued (``RESTARTING``), or it lives elsewhere."""
    if info.get("state") == "RESTARTING":
        return True
    node, worker = info.get("node", ""), info.get("worker", "")
    return bool((node and node != node_id) or (worker and worker_id and worker != worker_id))


def kill_job_actors(cluster: Cluster, job_id: str) -> None:
    """Non-detached actors end with the job that created them."""
    keys = cluster.keys
    members: Any = cluster.client.smembers(keys.job_actors(job_id))
    for raw in members:
        end_actor(cluster, raw.decode(), f"ended with its job {job_id}")
    cluster.client.delete(keys.job_actors(job_id))
