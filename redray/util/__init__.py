"""Utilities with Ray's names: ``ActorPool``, ``queue.Queue`` and ``state`` listings."""

from . import queue, state
from .actor_pool import ActorPool

__all__ = ["ActorPool", "queue", "state"]
