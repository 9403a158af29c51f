"""Utilities with Ray's names: ``ActorPool`` and ``queue.Queue``."""

from . import queue
from .actor_pool import ActorPool

__all__ = ["ActorPool", "queue"]
