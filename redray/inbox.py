"""Completion notices and waiting: how ``get``/``wait`` learn that objects exist.

Every task a process submits pushes a notice into the process's inbox (a
Redis list) when it ends; a process waiting for an object it does not own
subscribes to it and gets a token in the object's ``done`` list. Waiting is
blocking reads (BLPOP), never polling, in slices of at most ``BLOCK_SLICE``.

Notices are hints, the object keys are the truth (architecture.md, 12.3): a
pop whose reply was lost loses the notice, so after any failed or timed-out
read, and after a slice that brought nothing, a waiter re-checks the objects
it waits for. A failed read may have taken the notices of objects nobody
waits for yet, so the first re-check after one covers every owned object
still pending. A wait that runs out of time first (``wait(timeout=1)`` in a
loop: each call one short slice) re-checks on its way out when a read failed
since, or when this process has not asked Redis for ``BLOCK_SLICE`` s. One
thread reads the inbox at a time; the others wait on a condition every
applied notice signals, so concurrent waiters of one process never consume
each other's notices.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis

from . import dead_letters, ids
from .cluster import Cluster
from .connections import (
    BLOCK_MARGIN,
    BLOCK_SLICE,
    TRANSIENT,
    Batch,
    blocking_call,
    connection_error,
)
from .identity import Identity
from .reference_table import Held, ReferenceTable
from .serialization import decode_small
from .signing import SignatureError
from .submitter import Submitter

log = logging.getLogger(__name__)

#: Longest first BLPOP sent together with submissions (holds the flush lock).
COMBINED_BLOCK = 0.05
#: Notices taken per LPOP when draining.
DRAIN_BATCH = 1000
#: Objects no wait asks for that a re-check past a deadline (bounded by
#: ``BLOCK_MARGIN``) asks about after a failed read; more wait for a re-check
#: with time to spare.
LATE_RESYNC_MAX = 2000
#: Pushed into a process's own inbox to wake a reader blocked in BLPOP.
WAKE_MARKER = b"!"

_HEX = frozenset("0123456789abcdef")


def _is_notice(kind: bytes, ident: str) -> bool:
    """A task-done (or task-rejected) notice names a task id; an object
    notice an object id."""
    if kind in (b"t", b"x"):
        return len(ident) == ids.TASK_ID_LEN and _HEX.issuperset(ident)
    return kind == b"o" and len(ident) > ids.TASK_ID_LEN and _HEX.issuperset(ident)


class Inbox:
    def __init__(
        self,
        cluster: Cluster,
        refs: ReferenceTable,
        identity: Identity,
        submitter: Submitter,
        *,
        watch_job: bool = False,
    ) -> None:
        self.signer = cluster.signer
        #: a worker refused one of this process's tasks (its spec failed its
        #: signature check): (task id, why); the runtime fails its returns
        self.on_rejected: Callable[[str, str], None] | None = None
        self.settings = cluster.settings
        self.keys = cluster.keys
        self.client = cluster.client
        self.single = cluster.single
        #: the kept connection of the blocking reads (connections.Lane)
        self.lane = cluster.single_lane
        self.scripts = cluster.scripts
        self.refs = refs
        self.identity = identity
        self.submitter = submitter
        self.key = self.keys.inbox(identity.worker_id)
        #: a driver's waits also check that its job still exists
        self.watch_job = watch_job
        #: set when the job was found reaped: every wait raises it
        self.job_gone: BaseException | None = None
        #: executor hooks: give the task's CPU back while blocked, take it again
        self.on_block: Callable[[], None] | None = None
        self.on_unblock: Callable[[], None] | None = None
        self._reader = threading.Lock()
        self._cond = threading.Condition()
        #: borrowed object id -> number of waits subscribed to it
        self._borrowed: dict[str, int] = {}
        #: borrowed objects known to exist (while some wait wants them)
        self._arrived: set[str] = set()
        #: borrowed objects whose done lists the current reader watches
        self._reading: set[str] = set()
        self._unreachable_since: float | None = None
        #: failed reads so far (a pop whose reply was lost took its notices
        #: with it), and how many of them the last full re-check came after
        self._losses = 0
        self._resynced = 0
        #: when a re-check last reached Redis
        self._rechecked_at = time.monotonic()

    # -- notices -----------------------------------------------------------------------
    def handle(self, raw: bytes) -> str | None:
        """Apply one completion notice; returns the object it made ready."""
        if raw == WAKE_MARKER:
            return None  # a wake-up for a blocked reader: see job_reaped()
        sep = raw.find(b"\0")
        kind = raw[:1]
        try:
            ident = raw[1:sep].decode("ascii") if sep > 1 else ""
        except UnicodeDecodeError:
            ident = ""
        if not _is_notice(kind, ident):
            dead_letters.record(self.client, self.keys, self.key, "not a completion notice", raw)
            return None
        refs = self.refs
        if kind == b"t":
            refs.task_ended(ident)
            return None
        if kind == b"x":
            if self.on_rejected is not None:
                self.on_rejected(ident, raw[sep + 1 :].decode("utf-8", errors="replace"))
            return None
        tid = ident[: ids.TASK_ID_LEN]
        if refs.streams and tid in refs.streams:
            # a generator's items are owned as they arrive
            refs.own([ident])
            if ids.index_of(ident) == 0:
                refs.streams.discard(tid)
        data = raw[sep + 1 :]
        held: Held | None = None
        if data:
            try:
                held = decode_small(data, self.signer, ident)
            except SignatureError as exc:
                # a forged notice: not applied (the real one still comes, and a
                # wait re-checks the object record, which is checked too)
                dead_letters.record(
                    self.client, self.keys, self.key, f"signature check: {exc}", raw
                )
                return None
            except ValueError:
                held = None
        refs.mark_ready(ident, held)
        refs.task_ended(tid)
        return ident

    def _drain_locked(self) -> list[str]:
        """Apply every notice already waiting (the reader lock is held);
        returns the objects they made ready."""
        out: list[str] = []
        while True:
            # on the blocking reads' kept connection (the reader lock is held),
            # bounded as they are: a silent network fails it in BLOCK_MARGIN,
            # not the client's socket timeout (wait(timeout=0) drains first)
            batch: Any = blocking_call(self.lane, 0, "LPOP", self.key, DRAIN_BATCH)
            if not batch:
                return out
            for raw in batch:
                oid = self.handle(cast(bytes, raw))
                if oid is not None:
                    out.append(oid)
            if len(batch) < DRAIN_BATCH:
                return out

    def drain(self) -> None:
        """Apply the notices waiting now, without blocking."""
        with self._reader:
            try:
                self._drain_locked()
            except TRANSIENT:
                self._read_failed()
                raise
            finally:
                self._notify()

    def drain_if_idle(self) -> None:
        """Housekeeping: when no wait is reading and notices are expected for
        memory this process keeps (dropped refs, held arguments, actor calls),
        apply the waiting ones, so that memory goes while the job runs."""
        if not self.refs.awaiting() or not self._reader.acquire(blocking=False):
            return
        try:
            self._drain_locked()
        except TRANSIENT:
            # a lost pop reply may have taken notices of dropped refs with it
            self._losses += 1
            self._recheck_dropped()
        finally:
            self._reader.release()
            self._notify()

    def _recheck_dropped(self) -> None:
        dropped = list(self.refs.free_when_ready)
        if not dropped:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for oid in dropped:
                    pipe.exists(self.keys.obj(oid))
                found = pipe.execute()
        except redis.RedisError:
            return
        for oid, there in zip(dropped, found):
            if there:
                self.refs.mark_ready(oid, None)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- waiting -------------------------------------------------------------------------
    def _ready(self, oid: str) -> bool:
        return self.refs.is_ready(oid) or oid in self._arrived

    def wait_ready(
        self,
        oids: Sequence[str],
        num_needed: int,
        timeout: float | None,
        *,
        until_error: bool = False,
    ) -> set[str]:
        """Block until ``num_needed`` of ``oids`` exist in Redis (or time runs
        out); with ``until_error``, also until one is known to hold an error
        (``get`` raises it at once, as Ray does, while others are pending)."""
        self.check_job()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        wanted = list(dict.fromkeys(oids))
        ready = {o for o in wanted if self._ready(o)}
        failed = until_error and any(self.refs.is_error(o) for o in ready)
        if len(ready) >= num_needed or failed:
            return ready
        if deadline is not None and deadline <= time.monotonic():
            # no time to block: apply the notices already waiting instead
            self.submitter.flush()
            self._quietly(self.drain)
            ready = {o for o in wanted if self._ready(o)}
            if len(ready) < num_needed:
                self._recheck_late([o for o in wanted if o not in ready])
                ready = {o for o in wanted if self._ready(o)}
            return ready
        borrowed = [o for o in wanted if o not in ready and not self.refs.is_owned(o)]
        # With only owned objects to wait for, pending submissions travel in the
        # same round trip as the first BLPOP (the synchronous-task fast path).
        combine = not borrowed and self.submitter.has_pending()
        if not combine:
            self.submitter.flush()
        subscribed = self._subscribe(borrowed) if borrowed else []
        if subscribed:
            # those that already existed when we subscribed
            ready.update(o for o in subscribed if o in self._arrived)
        blocked = False
        progress_at = time.monotonic()
        missing = {o for o in wanted if o not in ready}
        try:
            while len(ready) < num_needed:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                if not blocked and self.on_block is not None:
                    blocked = True
                    self.on_block()
                slice_ = BLOCK_SLICE if left is None else min(left, BLOCK_SLICE)
                progressed, arrived = self._wait_slice(
                    slice_, combine, missing, num_needed - len(ready)
                )
                combine = False
                if arrived is None:
                    # another thread applied notices: look at ours
                    arrived = [o for o in missing if self._ready(o)]
                found = [o for o in arrived if o in missing]
                if found:
                    progress_at = time.monotonic()
                    missing.difference_update(found)
                    ready.update(found)
                    if until_error and any(self.refs.is_error(o) for o in found):
                        break
                if not progressed or time.monotonic() - progress_at >= BLOCK_SLICE:
                    # a notice for these may be lost (a pop whose reply never came)
                    self._recheck(list(missing), deadline)
                    found = [o for o in missing if self._ready(o)]
                    missing.difference_update(found)
                    ready.update(found)
                    progress_at = time.monotonic()
                self.check_job()
            if len(ready) < num_needed and missing:
                self._recheck_late(list(missing))
                ready.update(o for o in missing if self._ready(o))
        finally:
            if blocked and self.on_unblock is not None:
                self.on_unblock()
            if subscribed:
                self._unsubscribe(subscribed, [o for o in subscribed if not self._ready(o)])
        return ready

    def _wait_slice(
        self, block: float, combine: bool, missing: set[str], short: int
    ) -> tuple[bool, list[str] | None]:
        """Read notices for up to ``block`` s, or wait while another thread
        reads. Returns (whether something may have arrived: False after a
        quiet slice or a failed read, and the caller re-checks; the objects
        this thread saw arrive, or None when another thread applied notices)."""
        if not self._reader.acquire(blocking=False):
            # another thread reads the inbox; the done lists of borrowed
            # objects it does not watch, this thread watches itself
            extra = [
                self.keys.done(o)
                for o in list(missing)
                if o in self._borrowed and o not in self._arrived and o not in self._reading
            ]
            if not extra:
                with self._cond:
                    return self._cond.wait(block), None
            try:
                reply = blocking_call(self.lane, block, "BLPOP", *extra, max(block, 0.001))
            except TRANSIENT as exc:
                self._outage(exc)
                return False, None
            if reply is None:
                return False, None
            oid = bytes(reply[0]).decode()[len(self.keys.done("")) :]
            self._arrived.add(oid)
            self._notify()
            return True, [oid]
        try:
            watched = [o for o in list(self._borrowed) if o not in self._arrived]
            self._reading = set(watched)
            keys = [self.key, *[self.keys.done(o) for o in watched]]
            try:
                if combine:
                    block = min(block, COMBINED_BLOCK)
                    reply = self.submitter.send_with(
                        lambda pipe: pipe.command("BLPOP", *keys, max(block, 0.001)),
                        self.lane,
                        block + BLOCK_MARGIN,
                    )[0]
                else:
                    reply = blocking_call(self.lane, block, "BLPOP", *keys, max(block, 0.001))
                arrived: list[str] = []
                if reply is not None:
                    key = bytes(reply[0]).decode()
                    if key == self.key:
                        got = self.handle(bytes(reply[1]))
                        if got is not None:
                            arrived.append(got)
                        if not (got in missing and short <= 1):
                            # more to wait for: take what else is waiting now
                            arrived.extend(self._drain_locked())
                    else:
                        oid = key[len(self.keys.done("")) :]
                        self._arrived.add(oid)
                        arrived.append(oid)
                self._unreachable_since = None
                return reply is not None, arrived
            except TRANSIENT as exc:
                self._outage(exc)
                return False, []
        finally:
            self._reading = set()
            self._reader.release()
            self._notify()

    def _read_failed(self) -> float:
        """Count a failed read (it may have taken notices with it) and start
        the outage clock; returns now."""
        self._losses += 1
        now = time.monotonic()
        if self._unreachable_since is None:
            self._unreachable_since = now
        return now

    def _outage(self, exc: BaseException) -> None:
        """A read failed: back off a little; past the outage budget, raise."""
        since = self._unreachable_since
        now = self._read_failed()
        if since is not None and now - since > self.settings.outage_budget:
            self._unreachable_since = None
            raise connection_error(self.settings, exc) from exc
        time.sleep(0.05)

    def _recheck_late(self, missing: list[str]) -> None:
        """A wait ran out of time with ``missing`` not found: re-check them
        anyway (within ``BLOCK_MARGIN``) when a read failed since the last full
        re-check, or when no re-check reached Redis for ``BLOCK_SLICE`` s; so
        a caller that polls with short timeouts still finds an object whose
        notice was lost. Borrowed objects are left to the next wait, whose
        subscription finds them. Not while the last read failed: a connection
        to make (a server restarting, a black-holed network) could take longer
        than the caller's timeout allows; the first wait after it re-checks."""
        if self._unreachable_since is not None:
            return
        due = self._losses != self._resynced
        if due or time.monotonic() - self._rechecked_at >= BLOCK_SLICE:
            self._recheck(missing, None, late=True)

    def _recheck(self, missing: list[str], deadline: float | None, *, late: bool = False) -> None:
        """The notices for ``missing`` may be lost: ask Redis whether they
        exist (``late``: past the wait's deadline, owned objects only, within
        ``BLOCK_MARGIN``). After a failed read, every pending owned object."""
        if not missing and not self.watch_job:
            return
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return
        losses = self._losses
        resync = losses != self._resynced
        owned = [o for o in missing if self.refs.is_owned(o)]
        borrowed = [] if late else [o for o in missing if not self.refs.is_owned(o)]
        # plain tasks whose spec may be gone without a result (dropped as
        # unreadable or forged): asked only once every submission is applied
        sending = self.submitter.has_pending() or self.submitter.flush_lock.locked()
        tasks = [] if sending else self._plain_tasks(owned)
        dropped: list[str] = []
        if resync:
            # a lost pop may have taken notices of objects nobody waits for
            # now, or of dropped ones (freed once they exist); a late re-check
            # asks about a bounded number, and leaves the rest to the next
            extra = list(self.refs.pending_owned().difference(owned))
            dropped = list(self.refs.free_when_ready)
            if late and len(extra) + len(dropped) > LATE_RESYNC_MAX:
                resync = False
                extra, dropped = extra[:LATE_RESYNC_MAX], dropped[:LATE_RESYNC_MAX]
            owned.extend(extra)
        pipe = Batch(self.client)
        for oid in owned:
            pipe.command("EXISTS", self.keys.obj(oid))
        for tid in tasks:
            pipe.command("HEXISTS", self.keys.task_spec, tid)
        for oid in dropped:
            pipe.command("EXISTS", self.keys.obj(oid))
        if self.watch_job:
            pipe.command("HEXISTS", self.keys.jobs, self.identity.job_id)
        try:
            replies = pipe.execute(
                timeout=BLOCK_MARGIN
                if late
                else None
                if left is None
                else min(left + BLOCK_MARGIN, self.settings.socket_timeout)
            )
            if borrowed:
                flags = self.scripts.subscribe(
                    self.identity.worker_id, borrowed, False, retry=False
                )
                self._arrived.update(o for o, ok in zip(borrowed, flags) if ok)
        except TRANSIENT as exc:
            self._outage(exc)
            return
        found = set()
        for oid, there in zip(owned, replies):
            if there:
                found.add(ids.task_of(oid))
                self.refs.mark_ready(oid, None)
                self.refs.task_ended(ids.task_of(oid))
        for oid, there in zip(dropped, replies[len(owned) + len(tasks) :]):
            if there:
                self.refs.mark_ready(oid, None)
        for tid, queued in zip(tasks, replies[len(owned) :]):
            if not queued and tid not in found and self.on_rejected is not None:
                self.on_rejected(
                    tid,
                    "its spec is gone from Redis and it left no result: a worker dropped it "
                    "as unreadable or failing its signature check (see `redray dead-letters`)",
                )
        if self.watch_job and not replies[-1]:
            self.job_reaped()
        self._unreachable_since = None
        self._rechecked_at = time.monotonic()
        if resync:
            self._resynced = losses
        self._notify()

    def _plain_tasks(self, owned: list[str]) -> list[str]:
        """Tasks of ``owned`` that are neither actor calls (not in the task
        hashes) nor streaming generators (whose items may never come)."""
        refs = self.refs
        out = dict.fromkeys(
            t
            for t in (ids.task_of(o) for o in owned)
            if t not in refs.calls and t not in refs.streams
        )
        return list(out)

    def job_reaped(self) -> None:
        """The cluster cleaned up this driver's job (it stopped heartbeating
        for longer than its grace): every wait raises from now on."""
        from .exceptions import JobReapedError

        if self.job_gone is None:
            self.job_gone = JobReapedError(
                f"The cluster cleaned up this driver's job {self.identity.job_id}: the driver "
                "stopped heartbeating for longer than its grace period (the process was "
                "paused or cut off from Redis). Its tasks, actors and objects are gone. Call "
                "redray.shutdown() and redray.init() to start a new job, or give a longer "
                "grace with init(_job_grace_s=...)."
            )
            # a reader blocked in BLPOP hears it now, not at the end of its slice
            try:
                with self.client.pipeline(transaction=False) as pipe:
                    pipe.rpush(self.key, WAKE_MARKER)
                    pipe.expire(self.key, 30)
                    pipe.execute()
            except redis.RedisError:
                pass
        self._notify()

    def check_job(self) -> None:
        if self.job_gone is not None:
            raise self.job_gone

    # -- borrowed objects ------------------------------------------------------------------
    def _subscribe(self, borrowed: list[str]) -> list[str]:
        flags = self._quietly(
            lambda: self.scripts.subscribe(self.identity.worker_id, borrowed, True)
        )
        if flags is None:
            flags = [False] * len(borrowed)
        subscribed = []
        for oid, ok in zip(borrowed, flags):
            self._borrowed[oid] = self._borrowed.get(oid, 0) + 1
            subscribed.append(oid)
            if ok:
                self._arrived.add(oid)
        return subscribed

    def _unsubscribe(self, subscribed: list[str], still_missing: list[str]) -> None:
        for oid in subscribed:
            n = self._borrowed.get(oid, 0) - 1
            if n > 0:
                self._borrowed[oid] = n
            else:
                self._borrowed.pop(oid, None)
                self._arrived.discard(oid)
        gone = [o for o in still_missing if o not in self._borrowed]
        if not gone:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for oid in gone:
                    pipe.srem(self.keys.waiters(oid), "@" + self.identity.worker_id)
                pipe.execute()
        except redis.RedisError:
            pass

    @staticmethod
    def _quietly(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except TRANSIENT:
            return None
