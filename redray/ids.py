"""Identifiers: cheap, unique across processes and machines.

A task id is 12 random hex digits fixed per process plus an 8-digit counter;
its return objects are the task id plus a hex index of at least 4 digits
(1-based; a streaming generator's items count on past 0xffff, and index 0 is
its end-of-stream record), and a ``put`` object is a fresh task id plus
``0000``.
"""

from __future__ import annotations

import itertools
import os

_state: dict[str, object] = {}


def _reset() -> None:
    # Re-drawn after fork so a forked executor never repeats its parent's ids.
    _state["prefix"] = os.urandom(6).hex()
    _state["counter"] = itertools.count(1)


_reset()
os.register_at_fork(after_in_child=_reset)


def task_id() -> str:
    n = next(_state["counter"])  # type: ignore[call-overload]
    return f"{_state['prefix']}{n:08x}"


def return_id(task: str, index: int) -> str:
    return f"{task}{index:04x}"


def put_id() -> str:
    return return_id(task_id(), 0)


#: Length of a task id (12 + 8 hex digits); object ids add an index after it.
TASK_ID_LEN = 20


def task_of(object_id: str) -> str:
    return object_id[:TASK_ID_LEN]


def index_of(object_id: str) -> int:
    return int(object_id[TASK_ID_LEN:], 16)


def random_id(nbytes: int = 8) -> str:
    return os.urandom(nbytes).hex()
