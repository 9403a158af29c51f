"""Identifiers: cheap, unique across processes and machines.

A task id is 12 random hex digits fixed per process plus an 8-digit counter;
its return objects are the task id plus a 4-digit index (1-based), and a
``put`` object is a fresh task id plus ``0000``.
"""

from __future__ import annotations

import itertools
import os
import threading

_lock = threading.Lock()
_state: dict[str, object] = {}


def _prefix() -> str:
    # Re-drawn after fork so a forked executor never repeats its parent's ids.
    pid = os.getpid()
    if _state.get("pid") != pid:
        with _lock:
            if _state.get("pid") != pid:
                _state["prefix"] = os.urandom(6).hex()
                _state["counter"] = itertools.count(1)
                _state["pid"] = pid
    return str(_state["prefix"])


def task_id() -> str:
    prefix = _prefix()
    n = next(_state["counter"])  # type: ignore[call-overload]
    return f"{prefix}{n:08x}"


def return_id(task: str, index: int) -> str:
    return f"{task}{index:04x}"


def put_id() -> str:
    return return_id(task_id(), 0)


def task_of(object_id: str) -> str:
    return object_id[:-4]


def random_id(nbytes: int = 8) -> str:
    return os.urandom(nbytes).hex()
