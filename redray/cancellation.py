"""``cancel``: stop a task or an actor call, wherever it is.

A task that has not started is taken out of the scheduler and never runs; a
running one is flagged cancelled in its state (so it is never retried) and
its node is asked, through its control stream, to interrupt it
(KeyboardInterrupt in the task's code) or, with ``force``, to kill its
executor. A pending actor call is recorded in the actor's cancel set and the
actor is woken on its channel (a running async call is cancelled through
asyncio).
"""

from __future__ import annotations

from typing import Any, cast

from . import control, ids
from . import task_spec as ts
from .cluster import Cluster
from .exceptions import TaskCancelledError
from .recovery import fail_task, forget_task
from .reference_table import ReferenceTable
from .submitter import Submitter


def cancel(
    cluster: Cluster,
    submitter: Submitter,
    refs: ReferenceTable,
    oid: str,
    *,
    force: bool = False,
    recursive: bool = True,
) -> bool:
    """Returns False when the task had already finished."""
    submitter.flush()
    tid = ids.task_of(oid)
    actor_id = refs.calls.get(tid)
    if actor_id is not None:
        if force:
            raise ValueError("force=True is not supported for actor tasks.")
        k = cluster.keys
        with cluster.client.pipeline(transaction=False) as pipe:
            pipe.sadd(k.actor_cancelled(actor_id), tid)
            pipe.publish(k.actor_channel(actor_id), f"cancel {tid}")
            pipe.execute()
        return True
    state = cluster.scripts.cancel(tid, cluster.scripts.known_shapes())
    if state == "removed":
        publish_cancelled(cluster, tid)
        return True
    if state.startswith("R"):
        node_id, _, worker_id = state[1:].partition(" ")
        control.cancel(cluster, node_id, worker_id, tid, force=force, recursive=recursive)
        return True
    return False


def publish_cancelled(cluster: Cluster, tid: str) -> None:
    """A cancelled task that never ran: its results are TaskCancelledError."""
    spec_raw: Any = cluster.client.hget(cluster.keys.task_spec, tid)
    try:
        spec = (
            ts.open_spec(cluster.signer, cast(bytes, spec_raw), task_id=tid) if spec_raw else None
        )
    except ValueError:
        spec = None
    if spec is None:
        forget_task(cluster, tid)
        return
    oids = [ids.return_id(tid, i) for i in ts.result_indexes(spec)]
    fail_task(cluster, tid, spec.job_id, spec.owner, oids, TaskCancelledError(tid))
