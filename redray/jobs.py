"""Jobs: one per connected driver. Registration, the driver's heartbeat, and
cleanup when the job ends (``shutdown``) or its driver is reaped.

A driver heartbeats its job on a thread of its own, timed by the Redis
server's clock (``heartbeat.lua``). A node reaps a job whose driver has not
beaten for longer than the job's *grace* (90 s by default, chosen by the
driver and stored in the job record), or for 10 s when the driver ran on the
node's own host and its process is gone. Cleanup runs in bounded batches
under a fenced lock, off every heartbeat path.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from . import connections
from .cluster import Cluster
from .locks import FencedLock

log = logging.getLogger(__name__)

#: Seconds a driver may stay silent (paused, cut off) before its job is reaped.
DEFAULT_GRACE = 90.0
#: Seconds without a beat after which a driver whose process is gone is reaped.
DEAD_DRIVER_TIMEOUT = 10.0
#: Seconds between a driver's heartbeats.
HEARTBEAT_INTERVAL = 1.0
#: Tasks or keys one cleanup step handles.
CLEANUP_BATCH = 500
#: how long a finished job's output stays readable (`redray logs`), seconds
LOG_KEEP_S = 600


def process_started(pid: int | None) -> float | None:
    """A live process's start time (None if it is gone): with the pid, it
    tells a process from a later one that reused its pid."""
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def register(cluster: Cluster, job_id: str, worker_id: str, namespace: str, grace: float) -> None:
    """Record a new job (idempotent) and give it its first heartbeat."""
    k = cluster.keys
    info = {
        "job_id": job_id,
        "driver_pid": os.getpid(),
        "driver_started": process_started(os.getpid()),
        "driver_host": socket.gethostname(),
        "worker_id": worker_id,
        "namespace": namespace,
        "started": time.time(),
        "entrypoint": " ".join(sys.argv),
        "grace": grace,
    }

    def write() -> None:
        with cluster.client.pipeline(transaction=False) as pipe:
            pipe.hset(k.jobs, job_id, json.dumps(info))
            pipe.sadd(k.job_keys(job_id), k.inbox(worker_id), k.submitted(worker_id))
            pipe.execute()

    connections.retrying(cluster.settings, write)
    cluster.scripts.heartbeat(k.jobs, k.job_beats, job_id, retry=True)


class JobHeartbeat:
    """The driver's heartbeat thread: one beat a second on its own
    connection, so it never waits behind submissions or a blocked ``get``."""

    def __init__(self, cluster: Cluster, job_id: str, on_reaped: Callable[[], None]) -> None:
        # its own connection, with a short timeout: a beat that cannot get
        # through is skipped, the next one tries again
        settings = cluster.settings.replace(socket_timeout=2.0)
        self._cluster = Cluster.connect(settings)
        self.job_id = job_id
        self._on_reaped = on_reaped
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redray-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = self._cluster.keys
        while not self._stop.wait(HEARTBEAT_INTERVAL):
            try:
                alive = self._cluster.scripts.heartbeat(k.jobs, k.job_beats, self.job_id)
            except (redis.RedisError, OSError):
                continue
            if not alive:
                self._on_reaped()
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._cluster.close()


def job_info(cluster: Cluster, job_id: str) -> dict[str, Any] | None:
    raw: Any = cluster.client.hget(cluster.keys.jobs, job_id)
    if raw is None:
        return None
    try:
        info = json.loads(raw)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def reap_due(
    info: dict[str, Any] | None,
    silent_ms: int,
    this_host: str,
    dead_driver_timeout: float = DEAD_DRIVER_TIMEOUT,
) -> bool:
    """Whether a job silent for ``silent_ms`` should be reaped now: past its
    grace, or past ``dead_driver_timeout`` when its driver ran on this host
    and its process is gone."""
    if info is None:
        return True  # its record is gone: only its leftovers remain
    grace = info.get("grace", DEFAULT_GRACE)
    if not isinstance(grace, (int, float)):
        grace = DEFAULT_GRACE
    if silent_ms > grace * 1000:
        return True
    if silent_ms > dead_driver_timeout * 1000 and info.get("driver_host") == this_host:
        pid = info.get("driver_pid")
        started = info.get("driver_started")
        if isinstance(pid, int):
            now_started = process_started(pid)
            if now_started is None or (started is not None and abs(now_started - started) > 1):
                return True
    return False


def cleanup_job(cluster: Cluster, job_id: str) -> bool:
    """Delete everything the job left in Redis: its record first (so running
    tasks' results are dropped and its driver learns it was reaped), then its
    actors, its unfinished tasks and its keys, in bounded batches under a
    fenced lock. Returns False if another process holds the lock (it is doing
    this) or the lock was lost midway (the next holder finishes)."""
    from .actor_lifecycle import kill_job_actors

    k = cluster.keys
    lock = FencedLock(cluster.scripts, k.lock("job:" + job_id))
    if not lock.take():
        return False
    try:
        with cluster.client.pipeline(transaction=False) as pipe:
            pipe.hdel(k.jobs, job_id)
            pipe.zrem(k.job_beats, job_id)
            pipe.execute()
        kill_job_actors(cluster, job_id)
        shapes = cluster.scripts.known_shapes()
        while True:
            n = cluster.scripts.job_cleanup(lock.key, lock.token, job_id, CLEANUP_BATCH, shapes)
            if n < 0:
                return False
            if n == 0:
                break
            if not lock.renew():
                return False
        job_keys = k.job_keys(job_id)
        while True:
            # read, delete, then forget: re-sent after a lost reply, nothing is missed
            members: Any = cluster.client.srandmember(job_keys, CLEANUP_BATCH)
            if not members:
                break
            with cluster.client.pipeline(transaction=False) as pipe:
                pipe.unlink(*members)
                pipe.srem(job_keys, *members)
                pipe.execute()
            if not lock.renew():
                return False
        cluster.client.unlink(job_keys, k.job_tasks(job_id), k.job_actors(job_id))
        # what the job printed stays readable a while (`redray logs`)
        cluster.client.expire(k.job_logs(job_id), LOG_KEEP_S)
        return True
    finally:
        try:
            lock.release()
        except redis.RedisError:
            pass
