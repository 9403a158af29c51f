"""What one process knows about the objects it references and its tasks in flight.

Counts the live ``ObjectRef`` instances per object id, remembers which objects
this process owns (submitted the task or called ``put``), which are ready, and
small values it already holds. When the last reference to an owned object is
gone, the object is queued for deletion from Redis; an object whose reference
left the process inside a value ("escaped") stays pinned until its job ends.

It also keeps, per task this process submitted and has not heard the end of,
the ObjectRefs its arguments need alive (``in_flight``), the actor an actor
call went to (``calls``, for ``cancel``) and the streaming generators whose
items may still arrive (``streams``); completion notices prune all three.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .serialization import KIND_ERROR

#: (kind, frames) of a value held in process memory
Held = tuple[bytes, list[Any]]


class ReferenceTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.owned: set[str] = set()
        self.escaped: set[str] = set()
        #: owned objects known to exist in Redis
        self.ready: set[str] = set()
        #: small values held in memory, by object id
        self.held: dict[str, Held] = {}
        #: owned objects dropped before their task finished: free when ready
        self.free_when_ready: set[str] = set()
        #: object ids to delete from Redis at the next flush
        self.to_free: list[str] = []
        #: ids whose ObjectRef was garbage-collected, not yet applied. ``__del__``
        #: only appends here (deque.append is atomic): taking the lock there could
        #: deadlock when a collection runs while this thread holds it.
        self.released: deque[str] = deque()
        #: task id -> ObjectRefs its arguments need alive until it finishes
        self.in_flight: dict[str, list[Any]] = {}
        #: actor call task id -> actor id, until its notice arrives
        self.calls: dict[str, str] = {}
        #: streaming generator tasks whose items may still arrive
        self.streams: set[str] = set()
        #: told each time an ObjectRef is pickled (it may leave this process)
        self.on_escape: Callable[[str], None] | None = None

    def task_ended(self, task_id: str) -> None:
        """A notice said the task is done: its arguments and bookkeeping go."""
        self.in_flight.pop(task_id, None)
        self.calls.pop(task_id, None)

    def awaiting(self) -> bool:
        """Whether a notice is still expected for something this process
        keeps memory for (a dropped ref, held arguments, an actor call)."""
        return bool(self.free_when_ready or self.in_flight or self.calls)

    def add_local(self, oid: str) -> None:
        with self._lock:
            self.counts[oid] = self.counts.get(oid, 0) + 1

    def release(self, oid: str) -> None:
        """An ObjectRef was collected (safe to call from ``__del__``)."""
        self.released.append(oid)

    def apply_released(self) -> None:
        with self._lock:
            self._apply_released()

    def _apply_released(self) -> None:
        pop = self.released.popleft
        while self.released:
            self._remove(pop())

    def remove_local(self, oid: str) -> None:
        with self._lock:
            self._apply_released()
            self._remove(oid)

    def _remove(self, oid: str) -> None:
        n = self.counts.get(oid, 0) - 1
        if n > 0:
            self.counts[oid] = n
            return
        self.counts.pop(oid, None)
        if oid not in self.owned:
            self.held.pop(oid, None)
            return
        if oid in self.escaped:
            return
        self.owned.discard(oid)
        self.held.pop(oid, None)
        if oid in self.ready:
            self.ready.discard(oid)
            self.to_free.append(oid)
        else:
            self.free_when_ready.add(oid)

    def escape(self, oid: str) -> None:
        with self._lock:
            if oid in self.owned:
                self.escaped.add(oid)
        if self.on_escape is not None:
            self.on_escape(oid)

    def own(self, oids: Iterable[str], ready: bool = False) -> None:
        with self._lock:
            self.owned.update(oids)
            if ready:
                self.ready.update(oids)

    def mark_ready(self, oid: str, held: Held | None) -> None:
        """A completion notice arrived for an owned object."""
        with self._lock:
            if oid in self.free_when_ready:
                self.free_when_ready.discard(oid)
                self.to_free.append(oid)
                return
            if oid not in self.owned:
                return
            self.ready.add(oid)
            if held is not None:
                self.held[oid] = held

    def hold(self, oid: str, held: Held) -> None:
        with self._lock:
            if oid in self.counts:
                self.held[oid] = held

    def pending_returns(self, task_id: str) -> list[str]:
        """Owned objects of ``task_id`` not known to exist yet."""
        with self._lock:
            return sorted(o for o in self.owned if o.startswith(task_id) and o not in self.ready)

    def pending_owned(self) -> set[str]:
        """Owned objects not known to exist yet (their notices still due)."""
        with self._lock:
            return self.owned - self.ready

    def is_error(self, oid: str) -> bool:
        """Whether the object is known to hold an error (its notice carried it)."""
        held = self.held.get(oid)
        return held is not None and held[0] == KIND_ERROR

    def is_ready(self, oid: str) -> bool:
        return oid in self.ready or oid in self.held

    def is_owned(self, oid: str) -> bool:
        return oid in self.owned

    def take_to_free(self) -> list[str]:
        with self._lock:
            self._apply_released()
            out, self.to_free = self.to_free, []
            return out

    def prune(self) -> None:
        """Forget objects no live ObjectRef in this process points to.

        A long-lived executor calls this between tasks: objects it owned that
        escaped stay pinned in Redis until their job ends (the job's cleanup
        deletes them), so keeping their ids here would only grow memory.
        """
        with self._lock:
            self._apply_released()
            live = self.counts.keys()
            self.owned.intersection_update(live)
            self.escaped.intersection_update(live)
            self.ready.intersection_update(live)
            for oid in [o for o in self.held if o not in live]:
                del self.held[oid]

    def size(self) -> int:
        return len(self.owned) + len(self.held) + len(self.escaped)

    def forget_all(self) -> None:
        self.in_flight.clear()
        self.calls.clear()
        self.streams.clear()
        with self._lock:
            self.counts.clear()
            self.owned.clear()
            self.escaped.clear()
            self.ready.clear()
            self.held.clear()
            self.free_when_ready.clear()
            self.to_free.clear()
