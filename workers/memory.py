"""Memory limits, enforced by the node agent.

* A task or actor that declared ``memory=`` bytes runs in an executor whose
  slot carries that limit; an executor whose unique memory (USS: what would be
  freed if it exited, so pages shared with the agent it was forked from do not
  count) grows past it is killed with SIGKILL, and its task fails with
  ``OutOfMemoryError`` (not retried: it would only grow again).
* While the machine's available memory is under the node's floor, the node
  takes no new work: its executors stop claiming until memory is back, and
  other nodes take the queue.
"""

from __future__ import annotations

import logging
import os
import signal

import psutil

from . import slots as sl

log = logging.getLogger("redray.node")

#: How often executors with a memory limit are measured.
CHECK_INTERVAL = 0.25
#: Default floor: stop taking work with less than this share of memory available.
DEFAULT_FLOOR_FRACTION = 0.05


def floor_bytes(setting: float | None) -> int:
    """The free-memory floor in bytes: ``setting`` bytes, or a fraction of the
    machine's memory when it is at most 1 (None: the default fraction)."""
    total = psutil.virtual_memory().total
    if setting is None:
        setting = DEFAULT_FLOOR_FRACTION
    if setting < 0:
        raise ValueError(f"min_free_memory must not be negative, got {setting!r}.")
    return int(setting * total) if setting <= 1 else int(setting)


class MemoryMonitor:
    def __init__(self, slots: sl.Slots, floor: int) -> None:
        self.slots = slots
        self.floor = floor
        self._procs: dict[int, psutil.Process] = {}
        #: pid -> (bytes used, bytes allowed) of executors killed for memory
        self.killed: dict[int, tuple[int, int]] = {}

    def any_limited(self, pids: dict[int, tuple[int, str]]) -> bool:
        return any(self.slots.memory_limit(slot) for slot, _ in pids.values())

    def check_executors(self, pids: dict[int, tuple[int, str]]) -> None:
        """Kill every executor that uses more than its task's ``memory=``."""
        for pid, (slot, worker_id) in pids.items():
            limit = self.slots.memory_limit(slot)
            if not limit or pid in self.killed:
                continue
            used = self._unique_memory(pid)
            if used <= limit:
                continue
            self.killed[pid] = (used, limit)
            log.warning(
                "executor %s (pid %d) uses %s, more than the memory=%s declared for what it "
                "runs; killing it",
                worker_id,
                pid,
                format_bytes(used),
                format_bytes(limit),
            )
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def check_machine(self) -> bool:
        """Pause or resume taking work by the machine's available memory;
        True when that changed."""
        available = psutil.virtual_memory().available
        short = available < self.floor
        if short == self.slots.paused():
            return False
        self.slots.set_paused(short)
        if short:
            log.warning(
                "only %s of memory available (floor %s): taking no new work until more is free",
                format_bytes(available),
                format_bytes(self.floor),
            )
        else:
            log.warning("memory available again (%s): taking work", format_bytes(available))
        return True

    def exited(self, pid: int) -> tuple[int, int] | None:
        """Forget an exited executor; (used, allowed) if it was killed for memory."""
        self._procs.pop(pid, None)
        return self.killed.pop(pid, None)

    def _unique_memory(self, pid: int) -> int:
        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            return int(proc.memory_full_info().uss)
        except (psutil.Error, OSError):
            return 0  # gone or unreadable: the reaper deals with it


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
