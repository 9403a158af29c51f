"""``Queue``: a first-in first-out queue kept directly in Redis.

Ray's ``ray.util.queue.Queue`` lives in an actor; this one is a Redis list
(and, for a bounded queue, a list of free-slot tokens), so any driver, task
or actor holding the queue (it pickles to its id) reaches it without an
extra process. Blocking ``get``/``put`` block in Redis (BLPOP), never poll.
"""

from __future__ import annotations

import queue as _stdlib_queue
import time
from collections.abc import Iterable
from typing import Any

from .. import dead_letters, ids
from ..connections import BLOCK_SLICE, TRANSIENT, blocking_call, connection_error
from ..exceptions import RaySystemError
from ..serialization import pack, unpack
from ..signing import QUEUE, SignatureError


class Empty(_stdlib_queue.Empty):
    """``get`` found the queue empty (non-blocking, or after the timeout)."""


class Full(_stdlib_queue.Full):
    """``put`` found the queue full (non-blocking, or after the timeout)."""


class Queue:
    """A FIFO queue shared by every process of the cluster.

    ``maxsize <= 0`` means unbounded. ``actor_options`` is accepted for Ray
    compatibility and ignored: no actor is involved.
    """

    def __init__(
        self,
        maxsize: int = 0,
        actor_options: dict[str, Any] | None = None,
        *,
        _queue_id: str | None = None,
    ) -> None:
        from .. import session

        self.maxsize = maxsize
        self.queue_id = _queue_id or ids.random_id(10)
        if _queue_id is None:
            runtime = session.current_runtime(auto_init=True)
            keys = self._keys(runtime)
            with runtime.client.pipeline(transaction=True) as pipe:
                if maxsize > 0:
                    pipe.rpush(keys[1], *([b"1"] * maxsize))
                pipe.sadd(runtime.keys.job_keys(runtime.job_id), *keys)
                pipe.execute()

    def __reduce__(self) -> Any:
        return (_rebuild, (self.maxsize, self.queue_id))

    def _keys(self, runtime: Any) -> tuple[str, str]:
        return runtime.keys.queue(self.queue_id), runtime.keys.queue_free(self.queue_id)

    def _runtime(self) -> Any:
        from .. import session

        return session.current_runtime()

    # -- size ---------------------------------------------------------------------
    def size(self) -> int:
        runtime = self._runtime()
        return int(runtime.client.llen(self._keys(runtime)[0]))

    def qsize(self) -> int:
        return self.size()

    def __len__(self) -> int:
        return self.size()

    def empty(self) -> bool:
        return self.size() == 0

    def full(self) -> bool:
        return self.maxsize > 0 and self.size() >= self.maxsize

    # -- put ----------------------------------------------------------------------
    def _encode(self, runtime: Any, item: Any) -> bytes:
        data = pack(runtime.serializer.dumps(item))
        return bytes(runtime.signer.seal(QUEUE, self._keys(runtime)[0], data))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add an item; with ``block`` wait up to ``timeout`` s for a free slot (Full)."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        runtime = self._runtime()
        items, free = self._keys(runtime)
        data = self._encode(runtime, item)
        if self.maxsize > 0:
            if not block:
                token = runtime.cluster.single.lpop(free)
            else:
                token = _blocking_pop(runtime, free, timeout)
            if token is None:
                raise Full
        runtime.cluster.single.rpush(items, data)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all items at once, or none (Full) if they do not fit."""
        runtime = self._runtime()
        keys = self._keys(runtime)
        batch = [self._encode(runtime, item) for item in items]
        if not batch:
            return
        if self.maxsize > 0:
            taken = runtime.cluster.single.lpop(keys[1], len(batch)) or []
            if len(taken) < len(batch):
                if taken:
                    runtime.cluster.single.rpush(keys[1], *taken)
                raise Full(f"Cannot add {len(batch)} items to queue of maxsize {self.maxsize}")
        runtime.cluster.single.rpush(keys[0], *batch)

    # -- get ----------------------------------------------------------------------
    def _decode(self, runtime: Any, data: bytes) -> Any:
        key = self._keys(runtime)[0]
        try:
            payload = runtime.signer.open(QUEUE, key, data)
        except SignatureError as exc:
            dead_letters.record(runtime.client, runtime.keys, key, f"signature check: {exc}", data)
            raise RaySystemError(
                f"An item of queue {self.queue_id} failed its signature check, so it was "
                f"dropped without being unpickled: {exc}."
            ) from None
        return runtime.serializer.loads(unpack(payload))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; with ``block`` wait up to ``timeout`` s (Empty)."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        runtime = self._runtime()
        items, free = self._keys(runtime)
        if not block:
            data = runtime.cluster.single.lpop(items)
        else:
            data = _blocking_pop(runtime, items, timeout)
        if data is None:
            raise Empty
        if self.maxsize > 0:
            runtime.cluster.single.rpush(free, b"1")
        return self._decode(runtime, data)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove ``num_items`` items at once (Empty if there are fewer)."""
        if not isinstance(num_items, int) or num_items < 0:
            raise ValueError("'num_items' must be a non-negative integer")
        runtime = self._runtime()
        items, free = self._keys(runtime)
        if num_items == 0:
            return []
        got = runtime.scripts.queue_take(items, num_items)
        if not got:
            raise Empty(f"Cannot get {num_items} items from the queue")
        good = [d for d in got if _opens(runtime, items, d)]
        if len(good) < len(got):
            # forged items are dropped (and raised about); the good ones go
            # back to the front, keeping their slots
            if good:
                runtime.cluster.single.lpush(items, *reversed(good))
            if self.maxsize > 0:
                runtime.cluster.single.rpush(free, *([b"1"] * (len(got) - len(good))))
            bad = next(d for d in got if not _opens(runtime, items, d))
            self._decode(runtime, bad)  # records the dead letter and raises
        if self.maxsize > 0:
            runtime.cluster.single.rpush(free, *([b"1"] * len(got)))
        return [self._decode(runtime, d) for d in good]

    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Delete the queue's items."""
        runtime = self._runtime()
        runtime.client.delete(*self._keys(runtime))


def _blocking_pop(runtime: Any, key: str, timeout: float | None) -> Any:
    """BLPOP in slices with bounded sockets: returns within ``timeout`` + a
    moment even when the network black-holes. A pop is never re-sent blindly."""
    deadline = None if timeout is None else time.monotonic() + timeout
    unreachable_since: float | None = None
    while True:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return None
        block = BLOCK_SLICE if left is None else min(left, BLOCK_SLICE)
        try:
            got = blocking_call(runtime.cluster.single, block, "BLPOP", key, max(block, 0.001))
        except TRANSIENT as exc:
            now = time.monotonic()
            unreachable_since = unreachable_since or now
            if now - unreachable_since > runtime.settings.outage_budget:
                raise connection_error(runtime.settings, exc) from exc
            time.sleep(0.05)
            continue
        if got is not None:
            return got[1]
        unreachable_since = None


def _rebuild(maxsize: int, queue_id: str) -> Queue:
    return Queue(maxsize, _queue_id=queue_id)


def _opens(runtime: Any, key: str, data: bytes) -> bool:
    try:
        runtime.signer.open(QUEUE, key, data)
        return True
    except SignatureError:
        return False
