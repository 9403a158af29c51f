"""Dead letters: what redray could not read, kept with the reason instead of lost.

A malformed task spec, mailbox entry or completion notice (garbage written
straight into Redis, a foreign program sharing the prefix, a truncated write)
cannot be turned into an error on anyone's ObjectRef when it does not say whose
it is. The process that met it records it in the capped stream
``{prefix}:deadletters`` and carries on; ``redray dead-letters`` lists them.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import redis

from .constants import MAX_DEAD_LETTERS, Keys

log = logging.getLogger(__name__)

#: Bytes of the dropped data kept in the entry (enough to recognise it).
SAMPLE_BYTES = 512


def record(
    client: redis.Redis,
    keys: Keys,
    source: str,
    reason: str,
    data: bytes | bytearray | memoryview | None = None,
    **ids: str,
) -> None:
    """Record one dropped item: where it was (``source``, e.g. the key), why,
    a sample of its bytes and whatever ids are known (task, actor, entry).
    Best effort: a Redis error is logged, never raised, so that bad input
    cannot take the caller down."""
    log.error("dropped a malformed item from %s: %s", source, reason)
    fields: dict[str, Any] = {
        "source": source,
        "reason": reason[:2000],
        "time": f"{time.time():.3f}",
        "pid": os.getpid(),
        **{k: v for k, v in ids.items() if v},
    }
    if data is not None:
        raw = bytes(data)
        fields["size"] = len(raw)
        fields["data"] = raw[:SAMPLE_BYTES]
    try:
        client.xadd(
            keys.dead_letters,
            fields,  # type: ignore[arg-type]
            maxlen=MAX_DEAD_LETTERS,
            approximate=True,
        )
    except redis.RedisError as exc:
        log.warning("could not record the dead letter from %s: %s", source, exc)


def read(client: redis.Redis, keys: Keys, count: int = 100) -> list[dict[str, Any]]:
    """The newest ``count`` dead letters, newest first, as text fields."""
    entries: Any = client.xrevrange(keys.dead_letters, "+", "-", count=count)
    out = []
    for entry_id, fields in entries:
        item: dict[str, Any] = {"id": entry_id.decode()}
        for k, v in fields.items():
            name = k.decode(errors="replace")
            item[name] = v if name == "data" else v.decode(errors="replace")
        out.append(item)
    return out
