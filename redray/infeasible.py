"""Work no node can fit: said when it is submitted, and again while it waits.

A task or actor asking for resources no node has stays pending until a node
that offers them joins (as in Ray, where it is "infeasible"). The driver
warns at the first such submission of a resource shape, then, every
``REPEAT_S`` seconds while tasks of that shape still wait and still no node
fits them, logs how many wait and what is missing, so a hung job says why.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import redis

from .constants import Keys
from .resources import from_units, missing_resources, node_info, parse_shape

log = logging.getLogger(__name__)

#: how often a driver repeats the warning while infeasible work waits
REPEAT_S = 30.0


def describe(need: dict[str, int]) -> str:
    """``CPU=8.0, GPU=1.0``: what a shape asks for, for people."""
    return ", ".join(f"{k}={from_units(v)}" for k, v in sorted(need.items())) or "no resources"


def missing(shape: str, totals: list[dict[str, int]]) -> list[str]:
    """The resources no node has enough of for ``shape``; [] when some node
    fits it (or no node is up: nothing to compare against)."""
    need = parse_shape(shape)
    if not totals or not all(missing_resources(need, t) for t in totals):
        return []
    return sorted({m for t in totals for m in missing_resources(need, t)})


def node_totals(raw_nodes: dict[Any, Any]) -> list[dict[str, int]]:
    infos = [node_info(v) for v in raw_nodes.values()]
    return [dict(info["totals"]) for info in infos if info is not None]


def queued(
    client: redis.Redis, keys: Keys, shapes: list[str]
) -> tuple[list[dict[str, int]], list[int]]:
    """The live nodes' totals and each shape's queued tasks, in one pipeline."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.nodes)
        for shape in shapes:
            # ready members are "<shape>|<seq>|<task id>": '}' sorts after '|'
            pipe.zlexcount(keys.ready, f"[{shape}|", f"({shape}}}")
        raw_nodes, *counts = pipe.execute()
    return node_totals(raw_nodes), [int(c) for c in counts]


class InfeasibleShapes:
    """The resource shapes this process submitted that no node could fit."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.shapes: set[str] = set()
        self._next_check = 0.0

    def first_sight(self, shape: str, totals: list[dict[str, int]], what: str) -> None:
        """Warn (once per shape) if no node in ``totals`` fits ``shape``."""
        lacking = missing(shape, totals)
        if not lacking or shape in self.shapes:
            return
        self.shapes.add(shape)
        self._next_check = time.monotonic() + REPEAT_S
        warnings.warn(
            f"{what} asks for {describe(parse_shape(shape))}, which no node in the cluster "
            f"has (missing: {', '.join(lacking)}). It stays pending until a node that "
            "offers these resources joins.",
            stacklevel=5,
        )

    def recheck(self) -> None:
        """Every REPEAT_S: log the infeasible shapes that still have tasks
        waiting; forget those a node now fits. Cheap when there are none."""
        if not self.shapes or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + REPEAT_S
        shapes = sorted(self.shapes)
        try:
            totals, counts = queued(self.client, self.keys, shapes)
        except redis.RedisError as exc:
            log.debug("could not re-check infeasible work: %s", exc)
            return
        for shape, count in zip(shapes, counts):
            lacking = missing(shape, totals)
            if not lacking:
                self.shapes.discard(shape)
            elif count:
                log.warning(
                    "%d task(s) or actor(s) asking for %s still cannot be scheduled: no node "
                    "in the cluster has enough %s. They stay pending until a node that "
                    "offers these resources joins (see `redray status`).",
                    count,
                    describe(parse_shape(shape)),
                    ", ".join(lacking),
                )
