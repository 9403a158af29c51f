"""Utilities with Ray's names: ``ActorPool``, ``queue.Queue`` and ``state`` listings."""

from ..actor import list_named_actors
from . import queue, state
from .actor_pool import ActorPool

__all__ = ["ActorPool", "list_named_actors", "queue", "state"]
