"""Re-queueing work whose process or node died (at-least-once execution).

A task is owned by the node that claimed it for as long as that node
heartbeats. When its executor dies, the node re-queues it (its claim record
names the task even if the executor died before noting it anywhere else);
when the node itself stops heartbeating, any other node re-queues everything
its reservation records list and restarts its actors elsewhere. Results are
stored first-write-wins, so a task that runs twice still has exactly one
result. Every step is idempotent: a recovery interrupted half way is simply
done again.
"""

from __future__ import annotations

import logging
from typing import Any

from . import ids
from . import task_spec as ts
from .cluster import Cluster
from .constants import Keys
from .exceptions import OutOfMemoryError, WorkerCrashedError
from .locks import FencedLock
from .scripts import NO_OWNER, ReturnValue, parse_record
from .serialization import KIND_ERROR, encode_record

log = logging.getLogger(__name__)

#: Seconds without a heartbeat after which a node is declared dead.
NODE_TIMEOUT = 10.0


def recover_task(
    cluster: Cluster,
    node_id: str,
    task_id: str,
    how: str,
    *,
    worker_id: str = "",
    node_died: bool = False,
    memory: tuple[int, int] | None = None,
) -> None:
    """The process running ``task_id`` on ``node_id`` is gone: retry or fail it.
    ``memory`` is (used, allowed) when its node killed it for outgrowing ``memory=``."""
    k = cluster.keys
    raw: Any = cluster.client.hget(k.task_spec, task_id)
    spec = None
    if raw:
        try:
            spec = ts.open_spec(cluster.signer, raw, task_id=task_id)
        except ValueError:
            spec = None
    if spec is not None and spec.extra and spec.extra.get("actor") and not spec.extra.get("method"):
        from .actor_lifecycle import process_exited

        process_exited(
            cluster, node_id, spec.extra["actor"], how, task_id, memory, worker_id=worker_id
        )
        return
    record = parse_record(cluster.client.hget(k.node_running(node_id), task_id))
    worker = worker_id or (record.worker if record else "")
    shape = record.reservation.partition(";")[0] if record else "CPU=10000"
    state: Any = cluster.client.hget(k.task_state, task_id)
    cancelled = isinstance(state, bytes) and state.endswith(b" c")
    # a task that outgrew its memory= is not retried (cancelled ones: requeue.lua)
    budget = spec.max_retries if spec is not None and memory is None else 0
    outcome = cluster.scripts.requeue(node_id, task_id, worker, budget, shape)
    if outcome != 0:
        return
    if spec is None:
        # nobody to tell (its slots are already back)
        forget_task(cluster, task_id)
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
    oids = [ids.return_id(task_id, i) for i in ts.result_indexes(spec)]
    fail_task(cluster, task_id, spec.job_id, spec.owner, oids, err)


def forget_task(cluster: Cluster, task_id: str) -> None:
    """Delete the records of a task whose spec is unreadable: there is no
    owner to tell. Idempotent (``complete`` with no results)."""
    cluster.scripts.complete(
        task_id=task_id, job_id="", owner=NO_OWNER, node_id=None, returns=[], retry=True
    )


def fail_task(
    cluster: Cluster, task_id: str, job_id: str, owner: str, oids: list[str], err: BaseException
) -> None:
    """Publish ``err`` as every one of ``oids`` (the task's results), for its
    owner and anything that waits on them. Safe to repeat: results are
    first-write-wins and ``complete`` is retried idempotently."""
    cluster.scripts.complete(
        task_id=task_id,
        job_id=job_id,
        owner=owner,
        node_id=None,
        returns=error_returns(cluster, oids, err),
        retry=True,
    )


def error_returns(cluster: Cluster, oids: list[str], err: BaseException) -> list[ReturnValue]:
    """``err`` as the inline, signed result record of each of ``oids``."""
    frames = cluster.error_frames(err)
    return [
        ReturnValue(oid, bytes(encode_record(KIND_ERROR, frames, cluster.signer, oid)["d"]))
        for oid in oids
    ]


def recover_executor(cluster: Cluster, node_id: str, worker_id: str, how: str, **kw: Any) -> None:
    """An executor is gone: recover the task its claim record names (the
    executor may have died before noting the claim anywhere else), then
    delete the keys that were its own."""
    k = cluster.keys
    claimed: Any = cluster.client.get(k.claim(worker_id))
    if claimed:
        recover_task(cluster, node_id, claimed.decode(), how, worker_id=worker_id, **kw)
    forget_executor(cluster, node_id, worker_id)


def forget_executor(cluster: Cluster, node_id: str, worker_id: str) -> None:
    k = cluster.keys
    # one transaction: shape_wake.lua pushes only to listed executors, so
    # no push can land between the delete and the removal from the set
    with cluster.client.pipeline(transaction=True) as pipe:
        pipe.srem(k.node_workers(node_id), worker_id)
        pipe.delete(*worker_keys(k, worker_id))
        pipe.execute()


def worker_keys(k: Keys, worker_id: str) -> list[str]:
    """The keys that belong to one executor, deleted when it is gone."""
    return [
        k.inbox(worker_id),
        k.submitted(worker_id),
        k.claim(worker_id),
        k.executor_wake(worker_id),
    ]


def dead_nodes(cluster: Cluster, timeout: float = NODE_TIMEOUT) -> list[str]:
    """Nodes whose last heartbeat is older than ``timeout`` seconds, by the
    Redis server's clock."""
    _now, old = cluster.scripts.expired(cluster.keys.heartbeats, timeout)
    return [node for node, _ in old]


def recover_node(cluster: Cluster, node_id: str) -> bool:
    """Take over a dead node's work: re-queue its tasks, restart its actors,
    delete its registration and the keys of its executors. Under a fenced
    lock; returns True if this call did it."""
    k = cluster.keys
    lock = FencedLock(cluster.scripts, k.lock("node:" + node_id))
    if not lock.take():
        return False
    try:
        log.info("recovering the work of node %s", node_id)
        running: Any = cluster.client.hgetall(k.node_running(node_id))
        for raw_tid, raw_record in running.items():
            record = parse_record(raw_record)
            recover_task(
                cluster,
                node_id,
                raw_tid.decode(),
                "its node stopped heartbeating",
                worker_id=record.worker if record else "",
                node_died=True,
            )
            if not lock.renew():
                return False
        workers: Any = cluster.client.smembers(k.node_workers(node_id))
        with cluster.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k.nodes, node_id)
            pipe.zrem(k.heartbeats, node_id)
            pipe.delete(
                k.node_avail(node_id),
                k.node_gpus(node_id),
                k.node_running(node_id),
                k.node_wake(node_id),
                k.node_control(node_id),
                k.node_workers(node_id),
                k.node_ready(node_id),
            )
            for raw in workers:
                w = raw.decode()
                pipe.delete(*worker_keys(k, w))
            pipe.execute()
        return True
    finally:
        lock.release()
