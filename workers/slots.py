"""Executor slots in memory shared between a node agent and its executors.

Each forked executor owns one fixed-size slot in an anonymous shared mmap and
writes its state (and the task it runs) there; the agent reads it without any
system call to decide when to start another executor and which task to
re-queue when an executor dies.
"""

from __future__ import annotations

import mmap
import os
import struct

FREE = 0
STARTING = 1
IDLE = 2
RUNNING = 3
BLOCKED = 4
#: the executor became an actor's process: the task field holds its creation
#: task, the actor field the actor id
ACTOR = 5

_SLOT = 144
_TID = 40
#: offset of the task id a cancel request names
_CANCEL = 1 + _TID
#: offset of the actor id of an ACTOR slot
_ACTOR = 1 + 2 * _TID
#: offset of the memory limit (bytes, 0 for none) of what the executor runs
_MEMORY = 1 + 3 * _TID
#: offset of the byte that is 1 when a cancel request spares the task's children
_SHALLOW = _MEMORY + 8
_LIMIT = struct.Struct("<Q")


class Slots:
    def __init__(self, count: int) -> None:
        self.count = count
        # the slots, then one byte for the whole node: 1 while it takes no new work
        self._mem = mmap.mmap(-1, count * _SLOT + 1)
        self._paused_at = count * _SLOT
        #: executors write a byte here when the agent may need to act
        #: (the last idle executor got busy, or one blocked in get)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    def poke(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full: the agent is already due to wake

    def drain(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _states(self) -> bytes:
        # every slot's state byte in one slice (a Python loop over a thousand
        # slots cost an executor about 100 µs per task)
        return self._mem[0 : self.count * _SLOT : _SLOT]

    def any_idle(self) -> bool:
        states = self._states()
        return bytes([IDLE]) in states or bytes([STARTING]) in states

    def state(self, slot: int) -> int:
        return self._mem[slot * _SLOT]

    def set_state(self, slot: int, state: int) -> None:
        self._mem[slot * _SLOT] = state

    def task(self, slot: int) -> str:
        raw = self._mem[slot * _SLOT + 1 : slot * _SLOT + 1 + _TID]
        return raw.rstrip(b"\0").decode()

    def set_task(self, slot: int, task_id: str) -> None:
        raw = task_id.encode()[:_TID].ljust(_TID, b"\0")
        self._mem[slot * _SLOT + 1 : slot * _SLOT + 1 + _TID] = raw

    def cancel_request(self, slot: int) -> str:
        raw = self._mem[slot * _SLOT + _CANCEL : slot * _SLOT + _CANCEL + _TID]
        return raw.rstrip(b"\0").decode()

    def set_cancel_request(self, slot: int, task_id: str, recursive: bool = True) -> None:
        self._mem[slot * _SLOT + _SHALLOW] = 0 if recursive else 1
        raw = task_id.encode()[:_TID].ljust(_TID, b"\0")
        self._mem[slot * _SLOT + _CANCEL : slot * _SLOT + _CANCEL + _TID] = raw

    def cancel_recursive(self, slot: int) -> bool:
        """Whether the cancel request also cancels the tasks the task submitted."""
        return self._mem[slot * _SLOT + _SHALLOW] == 0

    def actor(self, slot: int) -> str:
        raw = self._mem[slot * _SLOT + _ACTOR : slot * _SLOT + _ACTOR + _TID]
        return raw.rstrip(b"\0").decode()

    def set_actor(self, slot: int, actor_id: str) -> None:
        raw = actor_id.encode()[:_TID].ljust(_TID, b"\0")
        self._mem[slot * _SLOT + _ACTOR : slot * _SLOT + _ACTOR + _TID] = raw

    def memory_limit(self, slot: int) -> int:
        return int(_LIMIT.unpack_from(self._mem, slot * _SLOT + _MEMORY)[0])

    def set_memory_limit(self, slot: int, limit: int) -> None:
        _LIMIT.pack_into(self._mem, slot * _SLOT + _MEMORY, max(limit, 0))

    def paused(self) -> bool:
        """Whether the node takes no new work (its machine is short of memory)."""
        return self._mem[self._paused_at] == 1

    def set_paused(self, paused: bool) -> None:
        self._mem[self._paused_at] = 1 if paused else 0

    def free_slot(self) -> int | None:
        at = self._states().find(bytes([FREE]))
        return None if at < 0 else at

    def counts(self) -> dict[int, int]:
        states = self._states()
        out = {FREE: 0, STARTING: 0, IDLE: 0, RUNNING: 0, BLOCKED: 0, ACTOR: 0}
        for s in out:
            out[s] = states.count(bytes([s]))
        return out
