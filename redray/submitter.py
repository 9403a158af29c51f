"""The submission buffer and its flusher thread.

``f.remote()`` and ``actor.method.remote()`` append to a buffer and return at
once; a flusher thread sends the buffer in batches (``submit.lua``,
``actor_call.lua``), so a burst of calls costs one round trip. Every entry
is numbered when it enters the buffer, and both scripts skip numbers at or
below the owner's watermark: a batch whose reply was lost is simply sent
again, within the outage budget, and nothing runs twice.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import redis

from .actor_records import ErrorFrames, fail_call
from .connections import TRANSIENT, Batch, Lane, connection_error
from .identity import Identity
from .reference_table import ReferenceTable
from .scripts import Scripts
from .settings import Settings
from .signing import Signer

log = logging.getLogger(__name__)

#: Largest batch of tasks one submit.lua call registers.
SUBMIT_BATCH = 2000
#: How long the flusher lets submissions collect before sending them.
FLUSH_DELAY = 0.0005
#: How often the flusher runs its housekeeping when nothing wakes it.
HOUSEKEEPING_INTERVAL = 0.2
#: After this many wakes in a row that found the buffer already sent (a
#: caller about to wait sent it: ``ray.get(f.remote())`` in a loop), the
#: flusher is no longer woken per submission and looks every ``LAZY_TICK``
#: instead: a wake per task cost that loop about 7%. The first look that finds
#: a submission nobody sent makes it eager again.
LAZY_AFTER = 4
LAZY_TICK = 0.01


class Pending(NamedTuple):
    """A submission waiting for the next batch."""

    kind: str  # "task" or "call"
    number: int
    job_id: str
    task_id: str
    spec: bytes
    #: the task's resource shape, or the called actor's id
    target: str
    deps: tuple[str, ...]


class Submitter:
    def __init__(
        self,
        settings: Settings,
        scripts: Scripts,
        refs: ReferenceTable,
        identity: Identity,
        error_frames: ErrorFrames,
        housekeeping: Callable[[bool], None],
        signer: Signer,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.scripts = scripts
        self.refs = refs
        self.identity = identity
        self._error_frames = error_frames
        self._housekeeping = housekeeping
        self._numbers = itertools.count(1)
        self._pending: list[Pending] = []
        self._pending_lock = threading.Lock()
        #: one sender at a time, so batches reach Redis in buffer order
        self.flush_lock = threading.Lock()
        self._flush_error: BaseException | None = None
        self._wake = threading.Event()
        #: wakes in a row that found nothing to send (see LAZY_AFTER); only
        #: the flusher thread writes it
        self._useless_wakes = 0
        self._stopped = False
        #: an executor's submitter: its tasks are nested (submitted by a
        #: running task or actor) and queue ahead of top-level tasks
        self.nested = False
        self._thread = threading.Thread(target=self._loop, name="redray-flush", daemon=True)
        self._thread.start()

    # -- the buffer ------------------------------------------------------------------
    def enqueue(
        self,
        kind: str,
        task_id: str,
        spec: bytes,
        target: str,
        deps: tuple[str, ...],
        holds: list[Any] | None,
        returns: list[str],
    ) -> None:
        self.raise_flush_error()
        self.refs.own(returns)
        if holds:
            self.refs.in_flight[task_id] = holds
        with self._pending_lock:
            was_empty = not self._pending or bool(self.refs.released)
            entry = Pending(
                kind, next(self._numbers), self.identity.job_id, task_id, spec, target, deps
            )
            self._pending.append(entry)
            full = len(self._pending) >= SUBMIT_BATCH
        if full:
            self.flush()
        elif was_empty and not self._lazy:
            self._wake.set()

    @property
    def _lazy(self) -> bool:
        return self._useless_wakes >= LAZY_AFTER

    def has_pending(self) -> bool:
        return bool(self._pending)

    def raise_flush_error(self) -> None:
        if self._flush_error is not None:
            err, self._flush_error = self._flush_error, None
            if isinstance(err, TRANSIENT):
                raise connection_error(self.settings, err)
            raise err

    def wake(self) -> None:
        self._wake.set()

    # -- sending -----------------------------------------------------------------------
    def flush(self) -> None:
        """Send what is buffered now; ConnectionError if Redis stays
        unreachable past the outage budget (the batch is kept and sent later)."""
        self._flush_pending()
        self.raise_flush_error()

    def _flush_pending(self) -> None:
        with self.flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                self._send(batch)

    def _send(self, batch: list[Pending]) -> None:
        deadline = time.monotonic() + self.settings.outage_budget
        delay = 0.05
        while True:
            try:
                pipe = self.scripts.batch()
                calls_at = self._queue(pipe, batch)
                replies = pipe.execute()
                self._flush_error = None  # Redis is back: an older failure is moot
                break
            except TRANSIENT as exc:
                # idempotent: a re-send skips what the server already applied
                if time.monotonic() + delay > deadline or self._stopped:
                    self._restore(batch)
                    self._flush_error = exc
                    return
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception as exc:  # noqa: BLE001 - e.g. the server refused the script
                self._restore(batch)
                self._flush_error = exc
                return
        self._after(batch, replies, calls_at)

    def _restore(self, batch: list[Pending]) -> None:
        """Put a batch that may not have been applied back at the front; the
        flusher sends it again (the scripts skip what was applied)."""
        with self._pending_lock:
            self._pending[:0] = batch
        self._wake.set()

    def send_with(
        self, extra: Callable[[Batch], None], client: redis.Redis | Lane, timeout: float
    ) -> list[Any]:
        """Send what is buffered and ``extra``'s commands in one round trip on
        ``client`` (the synchronous path: submissions plus the first BLPOP);
        returns the replies of ``extra``. Not retried here: the caller's
        command may be a pop. The buffered part is kept for a re-send."""
        with self.flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            pipe = Batch(client)
            calls_at = self._queue(pipe, batch)
            first_extra = len(pipe)
            extra(pipe)
            try:
                replies = pipe.execute(timeout=timeout)
            except BaseException:
                self._restore(batch)
                raise
        self._after(batch, replies, calls_at)
        return replies[first_extra:]

    def _queue(self, pipe: Batch, batch: list[Pending]) -> list[int]:
        """Add a batch's commands to ``pipe``, in order; returns the reply
        indexes of actor-call commands (whose replies name dead actors)."""
        owner = self.identity.worker_id
        calls_at: list[int] = []
        i = 0
        while i < len(batch):
            kind, job = batch[i].kind, batch[i].job_id
            j = i
            while (
                j < len(batch)
                and j - i < SUBMIT_BATCH
                and batch[j].kind == kind
                and (kind == "call" or batch[j].job_id == job)
            ):
                j += 1
            run = batch[i:j]
            if kind == "task":
                self.scripts.submit(
                    job,
                    owner,
                    [(e.number, e.task_id, e.target, e.spec, e.deps) for e in run],
                    pipe=pipe,
                    nested=self.nested,
                )
            else:
                calls_at.append(len(pipe))
                self.scripts.actor_call(
                    owner, [(e.number, e.target, e.spec) for e in run], pipe=pipe
                )
            i = j
        return calls_at

    def _after(self, batch: list[Pending], replies: list[Any], calls_at: list[int]) -> None:
        if not calls_at:
            return
        calls = [e for e in batch if e.kind == "call"]
        flags: list[Any] = []
        for at in calls_at:
            flags.extend(replies[at])
        for entry, flag in zip(calls, flags):
            if flag not in (0, 1):
                # the actor is dead: its stored death record becomes the result
                try:
                    fail_call(
                        self.scripts,
                        self._error_frames,
                        self.signer,
                        entry.spec,
                        bytes(flag),
                        actor_id=entry.target,
                    )
                except redis.RedisError:
                    log.warning("could not fail call %s of a dead actor", entry.task_id)

    # -- the thread --------------------------------------------------------------------
    def stop(self) -> None:
        """Send what is buffered, then stop the flusher thread."""
        if self._stopped:
            return
        try:
            self.flush()
        finally:
            self._stopped = True
            self._wake.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5)

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stopped:
            woken = self._wake.wait(LAZY_TICK if self._lazy else HOUSEKEEPING_INTERVAL)
            if self._stopped:
                return
            if woken:
                self._wake.clear()
                # Let a caller that is about to get/wait send the batch itself
                # (one round trip fewer on the synchronous path) and let a burst
                # of .remote() calls collect into one batch.
                time.sleep(FLUSH_DELAY)
            if self._pending:
                self._useless_wakes = 0
                # an error stays for the next API call to raise
                self._flush_pending()
                if self._flush_error is not None:
                    time.sleep(0.05)
            elif woken:
                self._useless_wakes += 1
            # not after every wake: a burst of calls must not pay for it
            now = time.monotonic()
            periodic = now - last >= HOUSEKEEPING_INTERVAL
            if periodic or self.refs.released:
                if periodic:
                    last = now
                try:
                    self._housekeeping(periodic)
                except Exception:  # noqa: BLE001 - retried at the next round
                    log.debug("housekeeping failed", exc_info=True)
