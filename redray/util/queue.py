"""``Queue``: a first-in first-out queue kept directly in Redis.

Ray's ``ray.util.queue.Queue`` lives in an actor; this one is a Redis list
(and, for a bounded queue, a list of free-slot tokens, plus a meta key that
holds the maxsize and says the queue exists), so any driver, task or actor
holding the queue (it pickles to its id) reaches it without an extra
process. Blocking ``get``/``put`` block in Redis (BLPOP), never poll.
"""

from __future__ import annotations

import asyncio
import logging
import queue as _stdlib_queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from .. import dead_letters, ids
from ..connections import BLOCK_SLICE, TRANSIENT, blocking_call, connection_error
from ..exceptions import ActorDiedError, RaySystemError
from ..serialization import pack, unpack
from ..signing import QUEUE, SignatureError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Replies of the queue scripts (queue_put.lua, queue_get.lua, queue_return.lua).
_DONE, _NOT_NOW, _GONE = 1, 0, -1

#: Server-side block of one BLPOP slice of ``put_async``/``get_async``: a
#: cancelled caller's thread ends within it (the sync calls use BLOCK_SLICE).
_ASYNC_SLICE = 1.0


class Empty(_stdlib_queue.Empty):
    """``get`` found the queue empty (non-blocking, or after the timeout)."""


class Full(_stdlib_queue.Full):
    """``put`` found the queue full (non-blocking, or after the timeout)."""


class QueueShutdownError(ActorDiedError):
    """The queue was shut down (``Queue.shutdown``, or the end of the job that
    created it): its items and Redis keys are gone. In Ray the calls of a
    shut-down queue fail because its actor is dead, hence the base class."""


class Queue:
    """A first-in, first-out queue shared by every process of the cluster.

    Ray's ``ray.util.queue.Queue``: sync and async ``put``/``get`` that
    block (up to ``timeout``) for a free slot or an item, non-blocking and
    batched forms, and ``shutdown``. ``maxsize <= 0`` means unbounded.

    Differences from Ray, which keeps the queue in an actor:

    * There is no actor. ``actor_options`` is accepted and ignored, and
      ``q.actor`` raises ``AttributeError`` saying so: the items live in
      Redis, and every process reaches them directly, so calls such as
      ``q.actor.qsize.remote()`` have nothing to run on. Call the queue's
      own methods (``q.qsize()``, ``await q.get_async()``) instead; they do
      what the actor methods of Ray's queue do.
    * ``shutdown`` deletes the queue's keys; every later call, from any
      process, raises ``QueueShutdownError`` (an ``ActorDiedError``, what
      Ray raises for the calls of a killed queue actor). A caller blocked
      in another process notices within a few seconds.
    * A ``get_async`` whose caller is cancelled never loses an item: one it
      took after all goes back to the front of the queue. A ``put_async``
      cancelled while waiting for a slot puts nothing.
    * Batch operations are atomic, as in Ray: ``put_nowait_batch`` adds
      every item or none, ``get_nowait_batch`` takes exactly ``num_items``
      or none.
    """

    def __init__(
        self,
        maxsize: int = 0,
        actor_options: dict[str, Any] | None = None,
        *,
        _queue_id: str | None = None,
        _job_id: str = "",
    ) -> None:
        from .. import session

        self.maxsize = maxsize
        self.queue_id = _queue_id or ids.random_id(10)
        #: the job whose key set holds the queue's keys (shutdown takes them out)
        self._job_id = _job_id
        self._shut_down = False
        #: calls in flight through this handle, which a graceful shutdown waits for
        self._active = 0
        self._idle = threading.Condition()
        if _queue_id is None:
            runtime = session.current_runtime(auto_init=True)
            self._job_id = runtime.job_id
            keys = self._keys(runtime)
            with runtime.client.pipeline(transaction=True) as pipe:
                pipe.set(keys[2], max(maxsize, 0))
                if maxsize > 0:
                    pipe.rpush(keys[1], *([b"1"] * maxsize))
                pipe.sadd(runtime.keys.job_keys(self._job_id), *keys)
                pipe.execute()

    def __reduce__(self) -> Any:
        return (_rebuild, (self.maxsize, self.queue_id, self._job_id))

    @property
    def actor(self) -> NoReturn:
        """Ray's queue actor; redray's queue has none (see the class docstring)."""
        raise AttributeError(
            f"redray's Queue has no actor: queue {self.queue_id} is a Redis list that every "
            "process reaches directly, so there is no q.actor.<method>.remote() to call. "
            "Call the Queue's own methods instead (q.qsize(), q.put(...), "
            "await q.get_async(), ...)."
        )

    def _keys(self, runtime: Any) -> tuple[str, str, str]:
        """(items, free slots, meta)."""
        keys = runtime.keys
        q = self.queue_id
        return keys.queue(q), keys.queue_free(q), keys.queue_meta(q)

    def _runtime(self) -> Any:
        from .. import session

        return session.current_runtime()

    @contextmanager
    def _use(self) -> Iterator[Any]:
        """The runtime, for one call that ``shutdown`` may wait for."""
        with self._idle:
            if self._shut_down:
                raise self._gone()
            self._active += 1
        try:
            yield self._runtime()
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _gone(self) -> QueueShutdownError:
        return QueueShutdownError(
            f"Queue {self.queue_id} was shut down (Queue.shutdown, or the end of the job "
            "that created it): its items and Redis keys are gone."
        )

    def _check_alive(self, runtime: Any, keys: tuple[str, str, str]) -> None:
        if self._shut_down or not runtime.client.exists(keys[2]):
            raise self._gone()

    # -- size ---------------------------------------------------------------------
    def size(self) -> int:
        """The size of the queue."""
        with self._use() as runtime:
            keys = self._keys(runtime)
            with runtime.client.pipeline(transaction=False) as pipe:
                pipe.llen(keys[0])
                pipe.exists(keys[2])
                size, alive = pipe.execute()
            if not alive:
                raise self._gone()
            return int(size)

    def qsize(self) -> int:
        """The size of the queue."""
        return self.size()

    def __len__(self) -> int:
        return self.size()

    def empty(self) -> bool:
        """Whether the queue is empty."""
        return self.size() == 0

    def full(self) -> bool:
        """Whether the queue is full."""
        return self.maxsize > 0 and self.size() >= self.maxsize

    # -- put ----------------------------------------------------------------------
    def _encode(self, runtime: Any, item: Any) -> bytes:
        data = pack(runtime.serializer.dumps(item))
        return bytes(runtime.signer.seal(QUEUE, self._keys(runtime)[0], data))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds an item to the queue.

        With ``block``, waits up to ``timeout`` seconds (``None``: forever)
        for a free slot; without, or after the timeout, raises ``Full``.
        ``ValueError`` if a blocking put's timeout is negative.
        """
        _check_timeout(block, timeout)
        with self._use() as runtime:
            self._put(runtime, self._encode(runtime, item), block, timeout, None)

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Adds an item to the queue, awaiting a free slot as ``put`` waits.

        The event loop runs on while the call waits in Redis. Cancelled while
        waiting for a slot, it puts nothing.
        """
        _check_timeout(block, timeout)
        data = self._encode(self._runtime(), item)
        cancelled = threading.Event()

        def run() -> None:
            with self._use() as runtime:
                self._put(runtime, data, block, timeout, cancelled)

        await _in_thread(run, cancelled)

    def _put(
        self,
        runtime: Any,
        data: bytes,
        block: bool,
        timeout: float | None,
        cancelled: threading.Event | None,
    ) -> None:
        keys = self._keys(runtime)
        if self._push(runtime, keys, True, [data])[0] == _DONE:
            return
        # timeout=0 is one try, as in the standard library (BLPOP 0 would wait forever)
        if not block or timeout == 0:
            raise Full
        slot = self._blocking_pop(runtime, keys, keys[1], timeout, cancelled)
        if slot is None:
            raise Full
        if cancelled is not None and cancelled.is_set():
            # the caller gave up: the slot goes back, not the item in
            runtime.scripts.queue_return(runtime.cluster.single, keys, 1)
            return
        if self._push(runtime, keys, False, [data])[0] != _DONE:
            raise self._gone()

    def _push(
        self, runtime: Any, keys: tuple[str, str, str], take: bool, batch: list[bytes]
    ) -> list[int]:
        reply: list[int] = runtime.scripts.queue_put(runtime.cluster.single, keys, take, batch)
        if reply[0] == _GONE:
            raise self._gone()
        return reply

    def put_nowait(self, item: Any) -> None:
        """Equivalent to ``put(item, block=False)``."""
        self.put(item, block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Puts the items into the queue in order, all of them or none.

        Raises ``Full`` (adding nothing) if they do not all fit, and
        ``TypeError`` if ``items`` is not iterable.
        """
        if not isinstance(items, Iterable):
            raise TypeError("Argument 'items' must be an Iterable")
        with self._use() as runtime:
            batch = [self._encode(runtime, item) for item in items]
            # one script: the check that they fit and the push are one step
            code, size = self._push(runtime, self._keys(runtime), True, batch)
            if code != _DONE:
                raise Full(
                    f"Cannot add {len(batch)} items to queue of size {size} "
                    f"and maxsize {self.maxsize}."
                )

    # -- get ----------------------------------------------------------------------
    def _open(self, runtime: Any, data: bytes) -> Any:
        """The item's payload, checked before anything unpickles it; a forged
        item becomes a dead letter and None."""
        key = self._keys(runtime)[0]
        try:
            return runtime.signer.open(QUEUE, key, data)
        except SignatureError as exc:
            dead_letters.record(runtime.client, runtime.keys, key, f"signature check: {exc}", data)
            return None

    def _decode(self, runtime: Any, data: bytes) -> Any:
        payload = self._open(runtime, data)
        if payload is None:
            raise RaySystemError(
                f"An item of queue {self.queue_id} failed its signature check, so it was "
                "dropped without being unpickled."
            )
        return runtime.serializer.loads(unpack(payload))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Gets the oldest item from the queue.

        With ``block``, waits up to ``timeout`` seconds (``None``: forever)
        for an item; without, or after the timeout, raises ``Empty``.
        ``ValueError`` if a blocking get's timeout is negative.
        """
        _check_timeout(block, timeout)
        with self._use() as runtime:
            return self._decode(runtime, self._get(runtime, block, timeout, None))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """Gets the oldest item from the queue, awaiting one as ``get`` waits.

        The event loop runs on while the call waits in Redis. Cancelled, it
        loses no item: one taken for the caller after all goes back to the
        front of the queue.
        """
        _check_timeout(block, timeout)
        cancelled = threading.Event()

        def run() -> bytes:
            with self._use() as runtime:
                return self._get(runtime, block, timeout, cancelled)

        data = await _in_thread(run, cancelled, orphan=self._put_back)
        return self._decode(self._runtime(), data)

    def _get(
        self, runtime: Any, block: bool, timeout: float | None, cancelled: threading.Event | None
    ) -> bytes:
        """The raw item taken, its slot given back."""
        keys = self._keys(runtime)
        if not block or timeout == 0:
            code, got = runtime.scripts.queue_get(runtime.cluster.single, keys, 1)
            if code == _GONE:
                raise self._gone()
            if code != _DONE:
                raise Empty
            return bytes(got[0])
        data = self._blocking_pop(runtime, keys, keys[0], timeout, cancelled)
        if data is None:
            raise Empty
        if self.maxsize > 0:
            # its slot: a separate step, since BLPOP cannot run in a script
            runtime.scripts.queue_return(runtime.cluster.single, keys, 1)
        return bytes(data)

    def _put_back(self, data: bytes) -> None:
        """An item a cancelled ``get_async`` took goes back to the front."""
        try:
            runtime = self._runtime()
            runtime.scripts.queue_return(runtime.cluster.single, self._keys(runtime), 0, [data])
        except Exception:
            log.exception("could not put back an item of queue %s", self.queue_id)

    def get_nowait(self) -> Any:
        """Equivalent to ``get(block=False)``."""
        return self.get(block=False)

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Gets exactly ``num_items`` items from the queue, oldest first.

        Raises ``Empty`` (taking nothing) if the queue holds fewer,
        ``TypeError`` if ``num_items`` is not an int and ``ValueError`` if
        it is negative.
        """
        if not isinstance(num_items, int):
            raise TypeError("Argument 'num_items' must be an int")
        if num_items < 0:
            raise ValueError("'num_items' must be nonnegative")
        with self._use() as runtime:
            keys = self._keys(runtime)
            code, got = runtime.scripts.queue_get(runtime.cluster.single, keys, num_items)
            if code == _GONE:
                raise self._gone()
            if code != _DONE:
                raise Empty(f"Cannot get {num_items} items from queue of size {got[0]}.")
            batch = [bytes(d) for d in got]
            payloads = [self._open(runtime, d) for d in batch]
            if any(p is None for p in payloads):
                # forged items were recorded as dead letters; the genuine ones
                # go back to the front, so that the failed batch loses none
                good = [d for d, p in zip(batch, payloads) if p is not None]
                if good:
                    runtime.scripts.queue_return(runtime.cluster.single, keys, 0, good)
                raise RaySystemError(
                    f"{len(batch) - len(good)} of {len(batch)} items taken from queue "
                    f"{self.queue_id} failed their signature check, so they were dropped "
                    "without being unpickled; the others are back at the front of the queue."
                )
            return [runtime.serializer.loads(unpack(p)) for p in payloads]

    # -- shutdown -----------------------------------------------------------------
    def shutdown(self, force: bool = False, grace_period_s: int = 5) -> None:
        """Deletes the queue: its items and Redis keys.

        Ray terminates the queue's actor here. Without ``force``, calls in
        flight through this handle (in other threads, or awaited
        ``get_async``/``put_async``) get up to ``grace_period_s`` seconds to
        finish first, as Ray lets the actor's pending calls finish; with
        ``force`` the keys go at once. Afterwards every call on the queue,
        from any process, raises ``QueueShutdownError``.
        """
        with self._idle:
            self._shut_down = True
            deadline = time.monotonic() + (0 if force else grace_period_s)
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
        runtime = self._runtime()
        keys = self._keys(runtime)
        with runtime.client.pipeline(transaction=True) as pipe:
            pipe.delete(*keys)
            pipe.srem(runtime.keys.job_keys(self._job_id or runtime.job_id), *keys)
            pipe.execute()

    # -- blocking -----------------------------------------------------------------
    def _blocking_pop(
        self,
        runtime: Any,
        keys: tuple[str, str, str],
        key: str,
        timeout: float | None,
        cancelled: threading.Event | None,
    ) -> Any:
        """BLPOP ``key`` in slices with bounded sockets: returns within
        ``timeout`` + a moment even when the network black-holes, None on
        timeout or once ``cancelled`` is set. A pop is never re-sent blindly.
        Between slices that the server answered, it checks that the queue
        still exists (QueueShutdownError)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        longest = BLOCK_SLICE if cancelled is None else _ASYNC_SLICE
        while True:
            if cancelled is not None and cancelled.is_set():
                return None
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            block = longest if left is None else min(left, longest)
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
            # the key of a shut-down queue is gone for good: BLPOP would wait on
            self._check_alive(runtime, keys)


def _check_timeout(block: bool, timeout: float | None) -> None:
    # as in Ray: only a blocking call looks at its timeout
    if block and timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")


async def _in_thread(
    fn: Callable[[], T],
    cancelled: threading.Event,
    orphan: Callable[[T], None] | None = None,
) -> T:
    """Await ``fn()`` run in a thread of its own.

    A thread per call, not the loop's default executor: an async actor with
    many waiting ``get_async`` calls would fill that small pool and stall
    everything else it runs there. When the caller is cancelled, ``cancelled``
    is set (``fn`` stops at its next slice), and a result that came anyway
    goes to ``orphan`` instead of being lost.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def hand_off(result: Any, error: BaseException | None) -> None:
        if fut.done():  # the caller was cancelled meanwhile
            if error is None and orphan is not None:
                threading.Thread(target=orphan, args=(result,), daemon=True).start()
        elif error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)

    def run() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = fn()
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(hand_off, result, error)
        except RuntimeError:  # the loop is closed: nobody will take the result
            if error is None and orphan is not None:
                orphan(result)

    threading.Thread(target=run, name="redray-queue", daemon=True).start()
    try:
        return await fut
    except asyncio.CancelledError:
        cancelled.set()
        # the result came, but the task was cancelled before it resumed
        if fut.done() and not fut.cancelled() and fut.exception() is None and orphan:
            threading.Thread(target=orphan, args=(fut.result(),), daemon=True).start()
        raise


def _rebuild(maxsize: int, queue_id: str, job_id: str = "") -> Queue:
    return Queue(maxsize, _queue_id=queue_id, _job_id=job_id)
