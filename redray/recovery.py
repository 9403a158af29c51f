"""Re-queueing work whose process or node died (at-least-once execution).

A task is owned by the node that claimed it for as long as that node
heartbeats. When its executor dies, the node re-queues it; when the node
itself stops heartbeating, any other node re-queues everything it held and
restarts its actors elsewhere. Results are stored first-write-wins, so a task
that runs twice still has exactly one result.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from . import ids
from . import task_spec as ts
from .exceptions import OutOfMemoryError, WorkerCrashedError
from .scripts import NO_OWNER
from .serialization import KIND_ERROR

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger(__name__)


def recover_task(
    runtime: Runtime,
    node_id: str,
    task_id: str,
    how: str,
    node_died: bool = False,
    memory: tuple[int, int] | None = None,
) -> None:
    """The process running ``task_id`` on ``node_id`` is gone: retry or fail it.
    ``memory`` is (used, allowed) when its node killed it for outgrowing ``memory=``."""
    raw: Any = runtime.client.hget(runtime.keys.task_spec, task_id)
    spec = None
    if raw:
        try:
            spec = ts.decode(raw)
        except ValueError:
            spec = None
    if spec is not None and spec.extra and spec.extra.get("actor") and not spec.extra.get("method"):
        from .actor_lifecycle import process_exited

        process_exited(runtime, node_id, spec.extra["actor"], how, task_id, memory)
        return
    # neither a cancelled task nor one that outgrew its memory= is retried
    cancelled = bool(runtime.client.sismember(runtime.keys.cancelled, task_id))
    budget = spec.max_retries if spec is not None and not cancelled and memory is None else 0
    outcome = runtime.scripts.requeue(node_id, task_id, budget)
    if outcome != 0:
        return
    if spec is None:
        # nobody to tell: forget the task's records (its slots are already back)
        runtime.scripts.complete(
            task_id=task_id, job_id="", owner=NO_OWNER, node_id=None, reservation="", returns=[]
        )
        return
    err: Exception
    if memory is not None:
        err = OutOfMemoryError(
            f"The task {spec.function_name} ({task_id}) was {how}. It is not retried: "
            "ask for more with memory=, or use less."
        )
    elif cancelled:
        err = WorkerCrashedError(
            f"The task {spec.function_name} ({task_id}) was killed by cancel(force=True)."
        )
    else:
        where = "node" if node_died else "worker"
        err = WorkerCrashedError(
            f"The task {spec.function_name} ({task_id}) died (its {where}: {how}) and its "
            f"retry budget (max_retries={spec.max_retries}) is spent."
        )
    frames = runtime.error_frames(err)
    returns = [
        runtime.return_value(ids.return_id(task_id, i), KIND_ERROR, frames, "crash")
        for i in ts.result_indexes(spec)
    ]
    runtime.scripts.complete(
        task_id=task_id,
        job_id=spec.job_id,
        owner=spec.owner,
        node_id=None,
        reservation="",
        returns=returns,
    )


def dead_nodes(runtime: Runtime, timeout: float) -> list[str]:
    """Nodes whose last heartbeat is older than ``timeout`` seconds."""
    stale: Any = runtime.client.zrangebyscore(
        runtime.keys.heartbeats, "-inf", time.time() - timeout
    )
    return [s.decode() for s in stale]


def recover_node(runtime: Runtime, node_id: str, by: str) -> bool:
    """Take over a dead node's work: re-queue its tasks, restart its actors,
    delete its registration. One recoverer at a time (a lock that expires if
    the recoverer dies too). Returns True if this call did it."""
    k = runtime.keys
    lock = k.node_reaper(node_id)
    if not runtime.client.set(lock, by, nx=True, ex=60):
        return False
    try:
        log.warning("node %s stopped heartbeating; recovering its work", node_id)
        running: Any = runtime.client.hkeys(k.node_running(node_id))
        for raw in running:
            recover_task(
                runtime, node_id, raw.decode(), "its node stopped heartbeating", node_died=True
            )
        with runtime.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k.nodes, node_id)
            pipe.zrem(k.heartbeats, node_id)
            pipe.delete(k.node_avail(node_id), k.node_gpus(node_id), k.node_running(node_id))
            pipe.execute()
        return True
    finally:
        runtime.client.delete(lock)
