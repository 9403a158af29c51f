"""Who a process is to the cluster, shared by the parts of its runtime."""

from __future__ import annotations

import functools
import socket
from dataclasses import dataclass


@functools.cache
def node_ip() -> str:
    """This machine's address, as its node reports it in ``ray.nodes()`` and
    as remote errors show it (``ip=``)."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


@dataclass
class Identity:
    """A driver's or executor's ids. An executor's ``job_id`` and
    ``namespace`` change with each task it runs."""

    worker_id: str
    job_id: str
    namespace: str = ""
    node_id: str | None = None
