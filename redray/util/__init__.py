"""Utilities with Ray's names: ``ActorPool``, ``queue.Queue`` and ``state`` listings."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ..actor import list_named_actors
from .actor_pool import ActorPool

if TYPE_CHECKING:
    from . import queue, state

__all__ = ["ActorPool", "list_named_actors", "queue", "state"]

#: imported when first used: every process imports redray (a node and each
#: executor too), and these two took a fifth of its import time
_LAZY = ("queue", "state")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
