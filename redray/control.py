"""Control requests to a node's agent: kill an executor, cancel its task.

They go into the node's control stream, read by the node's control thread
from the last entry it handled and deleted once applied, so a request made
while the node reconnects waits for it (pub/sub would drop it). Requests are
idempotent: killing a process that is gone, or cancelling a task an
executor no longer runs, does nothing.
"""

from __future__ import annotations

from .cluster import Cluster

#: The control stream keeps about this many entries.
MAX_CONTROL = 1000


def send(cluster: Cluster, node_id: str, request: str) -> None:
    """``request`` is ``kill <executor>`` or ``cancel <executor> <task id>
    [force] [shallow]``."""
    cluster.client.xadd(
        cluster.keys.node_control(node_id),
        {"r": request},
        maxlen=MAX_CONTROL,
        approximate=True,
    )


def kill(cluster: Cluster, node_id: str, worker_id: str) -> None:
    send(cluster, node_id, f"kill {worker_id}")


def cancel(
    cluster: Cluster, node_id: str, worker_id: str, task_id: str, *, force: bool, recursive: bool
) -> None:
    send(
        cluster,
        node_id,
        f"cancel {worker_id} {task_id}"
        + (" force" if force else "")
        + ("" if recursive else " shallow"),
    )
