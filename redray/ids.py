"""Identifiers: cheap, unique across processes and machines.

A task id is 12 random hex digits fixed per process plus an 8-digit counter;
its return objects are the task id plus a 4-digit index (1-based), and a
``put`` object is a fresh task id plus ``0000``.
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


def task_of(object_id: str) -> str:
    return object_id[:-4]


def random_id(nbytes: int = 8) -> str:
    return os.urandom(nbytes).hex()
