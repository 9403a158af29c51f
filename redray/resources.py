"""Resource requests and node capacities: validation, units and shapes.

Quantities are kept as integers in units of 1e-4 (``RESOURCE_UNIT``), Ray's
precision, so Lua adds and subtracts them exactly. A *shape* is the canonical
string of one request, ``'CPU=10000,GPU=5000'``: tasks with the same shape
share one FIFO in the ready queue.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from .constants import RESOURCE_UNIT

_FORBIDDEN = set(",=|;: \t\n{}")


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"Resource names must be non-empty strings, got {name!r}.")
    bad = _FORBIDDEN & set(name)
    if bad:
        raise ValueError(f"Resource name {name!r} contains forbidden characters {sorted(bad)}.")
    return name


def to_units(name: str, quantity: Any) -> int:
    """Quantity in 1e-4 units; ValueError for a negative or non-numeric one."""
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
        raise ValueError(f"Resource quantity for {name!r} must be a number, got {quantity!r}.")
    if math.isnan(quantity) or math.isinf(quantity) or quantity < 0:
        raise ValueError(f"Resource quantity for {name!r} must be >= 0, got {quantity!r}.")
    if name == "GPU" and quantity > 1 and not float(quantity).is_integer():
        raise ValueError(f"num_gpus above 1 must be a whole number, got {quantity!r}.")
    units = int(round(quantity * RESOURCE_UNIT))
    if quantity > 0 and units == 0:
        raise ValueError(
            f"Resource quantity for {name!r} is {quantity!r}: the precision of resource "
            "quantities cannot go beyond 0.0001."
        )
    return units


def from_units(units: int) -> float:
    value = units / RESOURCE_UNIT
    return float(int(value)) if value.is_integer() else value


def request(
    num_cpus: float | None,
    num_gpus: float | None,
    memory: float | None,
    resources: Mapping[str, float] | None,
    default_cpus: float = 1,
) -> dict[str, int]:
    """The units a task or actor asks for (zero entries dropped)."""
    out: dict[str, int] = {}
    out["CPU"] = to_units("CPU", default_cpus if num_cpus is None else num_cpus)
    if num_gpus is not None:
        out["GPU"] = to_units("GPU", num_gpus)
    if memory is not None:
        out["memory"] = to_units("memory", memory)
    for name, qty in (resources or {}).items():
        validate_name(name)
        if name in ("CPU", "GPU"):
            raise ValueError(
                f"Use the 'num_cpus' and 'num_gpus' options instead of {name!r} in 'resources'."
            )
        out[name] = to_units(name, qty)
    return {k: v for k, v in out.items() if v > 0}


def shape_of(units: Mapping[str, int]) -> str:
    return ",".join(f"{k}={units[k]}" for k in sorted(units))


def parse_shape(shape: str) -> dict[str, int]:
    out: dict[str, int] = {}
    if not shape:
        return out
    for part in shape.split(","):
        name, _, units = part.partition("=")
        out[name] = int(units)
    return out


def memory_limit(units: Mapping[str, int]) -> int:
    """Bytes of ``memory`` in a reservation's units (0 when none was asked for)."""
    return units.get("memory", 0) // RESOURCE_UNIT


def node_info(raw: bytes | str) -> dict[str, Any] | None:
    """A node's registration (its JSON in the nodes hash), or None when the
    value is not one: foreign data there must not break cluster listings."""
    import json

    try:
        info = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("node_id"), str):
        return None
    totals = info.get("totals")
    if not isinstance(totals, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in totals.items()
    ):
        return None
    return info


def units_of(raw: bytes | str | None) -> int:
    """A resource quantity stored in a hash; 0 for anything that is not an integer."""
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def parse_reservation(reservation: str) -> tuple[dict[str, int], dict[str, int]]:
    """(resource units, GPU id -> units) of a claim's reservation string."""
    shape, _, gpus = reservation.partition(";")
    return parse_shape(shape), parse_shape(gpus)


def fits_totals(need: Mapping[str, int], totals: Mapping[str, int]) -> bool:
    return all(totals.get(k, 0) >= v for k, v in need.items())


def missing_resources(need: Mapping[str, int], totals: Mapping[str, int]) -> list[str]:
    return [k for k, v in need.items() if totals.get(k, 0) < v]


def detect_gpus() -> list[str]:
    """GPU ids this machine offers: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def node_totals(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: Mapping[str, float] | None,
    memory: int | None = None,
) -> tuple[dict[str, int], list[str]]:
    """(total units per resource, GPU ids) for a node being started."""
    import psutil

    cpus = (os.cpu_count() or 1) if num_cpus is None else num_cpus
    gpu_ids = detect_gpus()
    if num_gpus is not None:
        if num_gpus < 0 or not float(num_gpus).is_integer():
            raise ValueError(f"--num-gpus must be a whole number >= 0, got {num_gpus!r}.")
        count = int(num_gpus)
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and count > len(gpu_ids):
            raise ValueError(
                f"--num-gpus={count} but CUDA_VISIBLE_DEVICES lists only {len(gpu_ids)} "
                f"device(s) ({os.environ['CUDA_VISIBLE_DEVICES']!r})."
            )
        gpu_ids = gpu_ids[:count] if len(gpu_ids) >= count else [str(i) for i in range(count)]
    totals: dict[str, int] = {"CPU": to_units("CPU", cpus)}
    if gpu_ids:
        totals["GPU"] = len(gpu_ids) * RESOURCE_UNIT
    mem = memory if memory is not None else int(psutil.virtual_memory().total * 0.7)
    totals["memory"] = to_units("memory", mem)
    for name, qty in (resources or {}).items():
        validate_name(name)
        if name in ("CPU", "GPU"):
            raise ValueError(f"Set {name} with --num-cpus/--num-gpus, not in resources.")
        totals[name] = to_units(name, qty)
    return totals, gpu_ids
