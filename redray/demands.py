"""What the cluster is waiting to run, per resource shape (``redray status``).

Read from the scheduling keys: queued tasks are the ``ready`` members of the
shape (``ZLEXCOUNT``: no scan), tasks waiting for their inputs the
``task:state`` fields ``W<shape>``/``w<shape>`` (an ``HSCAN``: this is for
people and the dashboard, never the hot path). A shape no live node can fit
is *infeasible*: its tasks wait until a node that offers it joins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from .constants import Keys
from .infeasible import missing, queued
from .resources import from_units, parse_shape


@dataclass
class Demand:
    """One resource shape's waiting work."""

    shape: str
    resources: dict[str, float]
    queued: int = 0
    waiting_for_inputs: int = 0
    #: the resources no node has enough of; [] when some node fits the shape
    missing: list[str] = field(default_factory=list)

    @property
    def infeasible(self) -> bool:
        return bool(self.missing)


def read_demands(client: redis.Redis, keys: Keys) -> list[Demand]:
    """The shapes with queued or waiting tasks, largest backlog first."""
    raw_shapes: Any = client.hkeys(keys.shapes)
    shapes = sorted(s.decode() if isinstance(s, bytes) else str(s) for s in raw_shapes)
    totals, counts = queued(client, keys, shapes)
    waiting = _waiting_for_inputs(client, keys)
    out = []
    for shape, count in zip(shapes, counts):
        demand = Demand(
            shape=shape,
            resources={k: from_units(v) for k, v in parse_shape(shape).items()},
            queued=count,
            waiting_for_inputs=waiting.get(shape, 0),
        )
        if demand.queued or demand.waiting_for_inputs:
            demand.missing = missing(shape, totals)
            out.append(demand)
    out.sort(key=lambda d: (-(d.queued + d.waiting_for_inputs), d.shape))
    return out


def _waiting_for_inputs(client: redis.Redis, keys: Keys) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, state in client.hscan_iter(keys.task_state, count=1000):
        text = state.decode() if isinstance(state, bytes) else str(state)
        if text[:1] in ("W", "w"):
            counts[text[1:]] = counts.get(text[1:], 0) + 1
    return counts
