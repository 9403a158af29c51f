"""The dashboard's connection to the cluster: one driver, one read at a time.

The state API reads through the process's global driver runtime
(``redray.init``), which is not meant to be shared by concurrent callers, so
every read here holds one lock. Before each read a client that never retries
pings the server: while Redis is unreachable the page learns it within a
few seconds (``ClusterUnreachable``) instead of waiting out the driver's
retry budget, and the server stays up. A read that fails for any other
cluster reason drops the driver; the next read connects again, so the
dashboard recovers by itself once the cluster is back.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import redis

import redray
from redray import api, connections
from redray.exceptions import RayError
from redray.runtime import Runtime
from redray.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds the liveness probe may take: the page polls every two seconds
PROBE_TIMEOUT = 2.0


class ClusterUnreachable(Exception):
    """The cluster's Redis did not answer; the message says why, without the password."""


class ClusterReader:
    """Runs state reads as a driver of the cluster at ``settings``, one at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._probe: redis.Redis | None = None
        #: task id -> when this dashboard first saw it running (seconds, Redis
        #: server time): the scheduling keys keep no start time for a running task
        self.first_seen_running: dict[str, float] = {}

    def _ping(self) -> None:
        if self._probe is None:
            probe = self.settings.replace(
                outage_budget=0.0, connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
            )
            self._probe = connections.client(probe)
        try:
            self._probe.ping()
        except (redis.RedisError, OSError) as exc:
            raise ClusterUnreachable(
                f"cannot reach the cluster at {self.settings.display}: {exc}"
            ) from None

    def _runtime(self) -> Runtime:
        if not redray.is_initialized():
            # log_to_driver=False: the dashboard prints no task output; the
            # secret does not travel in the URL, and names need it (signed specs)
            redray.init(
                address=self.settings.to_url(), log_to_driver=False, _secret=self.settings.secret
            )
        return api.current_runtime()

    def read(self, fn: Callable[[Runtime], T]) -> T:
        """``fn(runtime)`` under the lock; ``ClusterUnreachable`` when the cluster is not."""
        with self._lock:
            self._ping()
            try:
                return fn(self._runtime())
            except (redis.RedisError, ConnectionError, OSError, RayError) as exc:
                # a driver that lost the cluster (or whose job was reaped in a
                # long outage) is dropped; the next read connects afresh
                self._disconnect()
                raise ClusterUnreachable(
                    f"lost the cluster at {self.settings.display}: {exc}"
                ) from None

    def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            redray.shutdown()

    def close(self) -> None:
        """Disconnect the driver (its job's keys go, as any driver's)."""
        with self._lock:
            self._disconnect()
            if self._probe is not None:
                with contextlib.suppress(Exception):
                    self._probe.close()
                self._probe = None
