"""Telling a task's owner that a worker refused to run it.

A worker that finds a task spec or an actor call unsigned or forged
(signing.py) does not unpickle it, so it cannot read the owner from it. The
spec's envelope names the owner (unchecked): the worker pushes a *rejection
notice* ``x<task id>\\0<why>`` into that owner's inbox, and the owner fails the
task's results with that reason (``Runtime._task_rejected``) instead of
waiting for ever. A forged rejection notice can only fail a task, never run
code.
"""

from __future__ import annotations

import logging
import re

import redis

from . import task_spec as ts
from .constants import Keys

log = logging.getLogger(__name__)

#: what a worker id or task id looks like (anything else is not addressed)
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: Longest reason sent in a rejection notice.
MAX_REASON = 1000


def notice(task_id: str, why: str) -> bytes:
    return b"x" + task_id.encode() + b"\0" + why[:MAX_REASON].encode()


def report(client: redis.Redis, keys: Keys, raw_spec: bytes, task_id: str, why: str) -> None:
    """Best effort: tell the owner the envelope of ``raw_spec`` names, if it
    looks like a live worker id (its submission watermark exists), that task
    ``task_id`` (by default the one the envelope names) was refused.
    ``client`` is the single-shot one: a re-sent push would notify twice."""
    owner, _job, named = ts.owner_of(raw_spec)
    task_id = task_id or named
    if not (_ID.fullmatch(owner) and _ID.fullmatch(task_id)):
        return
    try:
        if client.exists(keys.submitted(owner)):
            client.rpush(keys.inbox(owner), notice(task_id, why))
    except redis.RedisError as exc:
        log.warning("could not tell %s that task %s was refused: %s", owner, task_id, exc)
