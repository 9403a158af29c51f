"""A connection to one redray cluster: settings, keys, clients and scripts.

What a process needs to act on the cluster's state without being a driver
or an executor (node agents, reapers, the CLI), and what the runtime of a
driver or executor is built on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from . import connections
from .constants import Keys
from .scripts import Scripts
from .serialization import CloudpickleSerializer, Serializer, error_frames
from .settings import Settings
from .signing import Signer


@dataclass
class Cluster:
    settings: Settings
    keys: Keys
    #: retrying client, for idempotent commands
    client: redis.Redis
    #: client that never retries: pops and blocking calls
    single: redis.Redis
    scripts: Scripts
    #: a connection of ``single`` kept for the hot blocking reads (an
    #: executor's wait for work, a driver's wait for results)
    single_lane: connections.Lane
    serializer: Serializer = field(default_factory=CloudpickleSerializer)
    #: seals and opens what this process writes and unpickles (signing.py)
    signer: Signer = field(default_factory=lambda: Signer(None, ""))

    @classmethod
    def connect(cls, settings: Settings, serializer: Serializer | None = None) -> Cluster:
        keys = Keys(settings.prefix)
        client = connections.client(settings)
        single = connections.single_shot(settings)
        return cls(
            settings,
            keys,
            client,
            single,
            Scripts(client, keys, settings),
            connections.Lane(single),
            serializer or CloudpickleSerializer(),
            Signer(settings.secret, settings.prefix),
        )

    def error_frames(self, error: BaseException) -> list[Any]:
        return error_frames(self.serializer, error)

    def close(self) -> None:
        self.scripts.lane.close()
        self.single_lane.close()
        self.client.close()
        self.single.close()
