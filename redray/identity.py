"""Who a process is to the cluster, shared by the parts of its runtime."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Identity:
    """A driver's or executor's ids. An executor's ``job_id`` and
    ``namespace`` change with each task it runs."""

    worker_id: str
    job_id: str
    namespace: str = ""
    node_id: str | None = None
