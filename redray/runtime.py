"""The per-process runtime: submit tasks, put, get and wait, against Redis.

One ``Runtime`` lives in each driver and each executor process (Ray's "core
worker"). Submissions are buffered and sent in batches by a flusher thread, so
``f.remote()`` costs no round trip; ``get``/``wait`` flush first, then block on
this process's inbox (a Redis list the producers push completion notices to)
with BLPOP, never polling.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import cloudpickle
import redis

from . import dead_letters, ids
from .buffers import frozen_copy
from .bulk import BulkChannel
from .constants import INLINE_LIMIT, Keys
from .exceptions import (
    GetTimeoutError,
    ObjectLostError,
    RayError,
    RaySystemError,
    RayTaskError,
    TaskCancelledError,
)
from .object_ref import ObjectRef
from .reference_table import Held, ReferenceTable
from .resources import missing_resources, node_info, parse_shape
from .scripts import Batch, ReturnValue, Scripts
from .serialization import (
    KIND_ERROR,
    KIND_VALUE,
    CloudpickleSerializer,
    Serializer,
    decode_record,
    encode_record,
    frames_size,
    unpack,
)
from .settings import Settings
from .uploader import Uploader

log = logging.getLogger(__name__)

#: Largest batch of tasks one submit.lua call registers.
SUBMIT_BATCH = 2000
#: Bytes of large fetched objects a process keeps for reuse.
LARGE_CACHE_BYTES = 512 * 1024 * 1024
#: Seconds between a driver's job heartbeats.
JOB_HEARTBEAT = 1.0
#: Frees are sent in batches of this many, or after FREE_INTERVAL seconds.
FREE_BATCH = 256
FREE_INTERVAL = 0.1
#: How long the flusher lets submissions collect before sending them.
FLUSH_DELAY = 0.0005
#: Longest first BLPOP sent together with submissions (holds the flush lock).
COMBINED_BLOCK = 0.05
#: Longest single BLPOP; waits are re-issued so a dead server is noticed.
BLOCK_SLICE = 5.0


class Pending(NamedTuple):
    """A submission waiting for the next batch."""

    kind: str  # "task" or "call"
    job_id: str
    task_id: str
    spec: bytes
    #: the task's resource shape, or the called actor's id
    target: str
    deps: tuple[str, ...]


def connection_error(settings: Settings, exc: BaseException) -> ConnectionError:
    return ConnectionError(
        f"Could not reach the redray Redis server at {settings.display}: {exc}. "
        "Check that it is running (`redray start --head`) and that the address is right."
    )


class Runtime:
    """Submits, stores and fetches on behalf of one process."""

    def __init__(
        self,
        settings: Settings,
        job_id: str,
        worker_id: str,
        *,
        namespace: str = "",
        serializer: Serializer | None = None,
        node_id: str | None = None,
        heartbeat: bool = False,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.job_id = job_id
        self.worker_id = worker_id
        self.namespace = namespace
        self.node_id = node_id
        #: the task an executor is running (None in a driver)
        self.current_task: Any = None
        #: set in an actor's process
        self.current_actor: Any = None
        #: cancel() reached the task this executor runs (get_runtime_context().is_canceled())
        self.cancel_requested = False
        #: tasks submitted by the task this executor runs (cancelled with it)
        self.children: list[str] = []
        #: actor call task id -> actor id, for cancel()
        self.actor_calls: dict[str, str] = {}
        #: streaming generator tasks whose items may still arrive
        self.streams: set[str] = set()
        self.serializer: Serializer = serializer or CloudpickleSerializer()
        self.client = settings.client()
        self.blocking_client = settings.client(blocking=True)
        self.bulk = BulkChannel(settings)
        #: large objects already fetched (immutable, so safe to reuse), LRU
        self._large: OrderedDict[str, tuple[Held, int]] = OrderedDict()
        self._large_bytes = 0
        self._large_lock = threading.Lock()
        #: large put objects on their way to Redis
        self.uploader = Uploader(self)
        self.scripts = Scripts(self.client, self.keys)
        self.refs = ReferenceTable()
        self.inbox = self.keys.inbox(worker_id)
        #: task id -> ObjectRefs its arguments need alive until it finishes
        self.in_flight: dict[str, list[ObjectRef[Any]]] = {}
        #: function digest -> key, per job, already uploaded
        self._functions: dict[tuple[str, int], tuple[str, str]] = {}
        self._known_shapes: set[str] = set()
        self._warned_shapes: set[str] = set()
        #: executor hooks: give the task's CPU back while blocked, take it again
        self.on_block: Callable[[], None] | None = None
        self.on_unblock: Callable[[], None] | None = None
        self._pending: list[Pending] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flush_error: BaseException | None = None
        self._wake = threading.Event()
        self._closed = False
        self._stopped = False
        self._free_lock = threading.Lock()
        self._last_free = 0.0
        #: owned objects too big to leave in Redis until the next batch of frees
        self._large_owned: set[str] = set()
        #: a driver heartbeats its job so the cluster can clean up after it dies
        self._heartbeat = heartbeat
        self._flusher = threading.Thread(target=self._flush_loop, name="redray-flush", daemon=True)
        self._flusher.start()

    # -- lifecycle -----------------------------------------------------------------
    def stop_flusher(self) -> None:
        """Send what is buffered, then stop the flusher thread (and heartbeats)."""
        if self._stopped:
            return
        try:
            self.flush(free=True)
        finally:
            self._stopped = True
            self._wake.set()
            if self._flusher is not threading.current_thread():
                self._flusher.join(timeout=5)
            self.uploader.stop()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.stop_flusher()
        finally:
            self._closed = True
            self.refs.forget_all()
            self.in_flight.clear()
            self.client.close()
            self.blocking_client.close()
            self.bulk.close()

    # -- functions -------------------------------------------------------------------
    def function_key(self, fn: Callable[..., Any], name: str) -> tuple[str, str]:
        """Upload a function once per job; returns (key, digest)."""
        cache_key = (self.job_id, id(fn))
        known = self._functions.get(cache_key)
        if known is not None:
            return known
        try:
            blob = cloudpickle.dumps(fn, protocol=5)
        except Exception as exc:
            raise TypeError(
                f"Could not serialize the function {name}: {exc!r}. A remote function must be "
                "picklable by cloudpickle (no open files, locks or sockets in its closure)."
            ) from exc
        digest = hashlib.sha1(blob).hexdigest()
        key = self.keys.function(self.job_id, digest)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.set(key, blob, nx=True)
                pipe.sadd(self.keys.job_keys(self.job_id), key)
                pipe.execute()
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        self._functions[cache_key] = (key, digest)
        return key, digest

    # -- submit ----------------------------------------------------------------------
    def check_shape(self, shape: str, what: str) -> None:
        """Register a new resource shape; warn once if no node can ever fit it."""
        if shape in self._known_shapes:
            return
        self._known_shapes.add(shape)
        try:
            self.client.hset(self.keys.shapes, shape, 1)
            totals = self.node_totals()
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        need = parse_shape(shape)
        if (
            totals
            and all(missing_resources(need, t) for t in totals)
            and shape not in self._warned_shapes
        ):
            self._warned_shapes.add(shape)
            missing = sorted({m for t in totals for m in missing_resources(need, t)})
            warnings.warn(
                f"{what} asks for {_describe(need)}, which no node in the cluster has "
                f"(missing: {', '.join(missing)}). It stays pending until a node that "
                "offers these resources joins.",
                stacklevel=4,
            )

    def node_totals(self) -> list[dict[str, int]]:
        infos = [node_info(raw) for raw in self.client.hvals(self.keys.nodes)]
        return [dict(info["totals"]) for info in infos if info is not None]

    def submit(
        self,
        task_id: str,
        shape: str,
        spec: bytes,
        deps: tuple[str, ...],
        holds: list[ObjectRef[Any]] | None,
        returns: list[str],
    ) -> None:
        """Queue a task for the next batch; the flusher sends it."""
        if self.current_task is not None:
            self.children.append(task_id)
        self._enqueue(Pending("task", self.job_id, task_id, spec, shape, deps), holds, returns)

    def submit_actor_call(
        self,
        actor_id: str,
        task_id: str,
        spec: bytes,
        holds: list[ObjectRef[Any]] | None,
        returns: list[str],
    ) -> None:
        """Queue an actor method call; it reaches the mailbox in submission order."""
        if returns:
            self.actor_calls[task_id] = actor_id
        self._enqueue(Pending("call", self.job_id, task_id, spec, actor_id, ()), holds, returns)

    def _enqueue(
        self, entry: Pending, holds: list[ObjectRef[Any]] | None, returns: list[str]
    ) -> None:
        if self._flush_error is not None:
            err, self._flush_error = self._flush_error, None
            raise connection_error(self.settings, err)
        self.refs.own(returns)
        if holds:
            self.in_flight[entry.task_id] = holds
        with self._pending_lock:
            was_empty = not self._pending or bool(self.refs.released)
            self._pending.append(entry)
            full = len(self._pending) >= SUBMIT_BATCH
        if full:
            self.flush()
        elif was_empty:
            self._wake.set()

    def flush(self, free: bool = False) -> None:
        """Send buffered submissions now (and due frees, when ``free``)."""
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                self._send(batch)
        if free:
            self._free_now()
        if self._flush_error is not None:
            err, self._flush_error = self._flush_error, None
            raise connection_error(self.settings, err)

    def settle(self) -> None:
        """Before a task's results go out: what it submitted and what it put
        must be in Redis first, since the results may name them."""
        self.flush()
        self.uploader.wait_idle()

    def _queue_batch(self, pipe: Batch, batch: list[Pending]) -> list[int]:
        """Add a batch's commands to ``pipe``, in order; returns the reply
        indexes of actor-call commands (whose replies name dead actors)."""
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
                    job, [(e.task_id, e.target, e.spec, e.deps) for e in run], pipe=pipe
                )
            else:
                calls_at.append(len(pipe))
                self.scripts.actor_call([(e.target, e.spec) for e in run], pipe=pipe)
            i = j
        return calls_at

    def _after_batch(self, batch: list[Pending], replies: list[Any], calls_at: list[int]) -> None:
        if not calls_at:
            return
        calls = [e for e in batch if e.kind == "call"]
        flags: list[Any] = []
        for at in calls_at:
            flags.extend(replies[at])
        for entry, flag in zip(calls, flags):
            if flag != 1:
                # the actor is dead: its stored death record becomes the result
                from .actor import fail_call

                fail_call(self, entry.spec, bytes(flag))

    def _send(self, batch: list[Pending]) -> None:
        try:
            pipe = self.scripts.batch()
            calls_at = self._queue_batch(pipe, batch)
            replies = pipe.execute()
        except redis.RedisError as exc:
            with self._pending_lock:
                self._pending[:0] = batch
            self._flush_error = exc
            raise
        self._after_batch(batch, replies, calls_at)

    def beat(self) -> None:
        self.client.zadd(self.keys.job_beats, {self.job_id: time.time()})

    def _flush_loop(self) -> None:
        last_beat = time.monotonic()
        while not self._stopped:
            # the timeout also applies refs collected since (see ReferenceTable.release)
            woken = self._wake.wait(JOB_HEARTBEAT)
            if self._heartbeat and time.monotonic() - last_beat >= JOB_HEARTBEAT:
                try:
                    self.beat()
                    last_beat = time.monotonic()
                except redis.RedisError:
                    pass
            if not woken:
                if self.refs.released or self.refs.to_free:
                    try:
                        self.flush(free=True)
                    except Exception:  # noqa: BLE001 - retried at the next wake
                        pass
                continue
            self._wake.clear()
            if self._stopped:
                return
            # Let a caller that is about to get/wait send the batch itself (one
            # round trip fewer on the synchronous path) and let a burst of
            # .remote() calls collect into one batch.
            time.sleep(FLUSH_DELAY)
            try:
                if self._pending:
                    self.flush(free=self._free_due())
                elif self._free_due():
                    self._free_now()
            except Exception:  # noqa: BLE001 - re-raised to the caller of the next API call
                time.sleep(0.05)

    def _free_due(self) -> bool:
        """Batch deletions: free when many are due, a large object is among
        them, or the last free was a while ago (the heartbeat timeout frees too)."""
        refs = self.refs
        due = len(refs.to_free) + len(refs.released)
        if not due:
            return False
        if due >= FREE_BATCH or time.monotonic() - self._last_free >= FREE_INTERVAL:
            return True
        try:
            return any(oid in self._large_owned for oid in list(refs.released))
        except RuntimeError:  # the deque grew while we looked: free now
            return True

    def _free_now(self) -> None:
        with self._free_lock:
            self._free_locked()

    def _free_locked(self) -> None:
        self._last_free = time.monotonic()
        oids = self.refs.take_to_free()
        if not oids:
            return
        self._large_owned.difference_update(oids)
        with self._large_lock:
            for oid in oids:
                self.uploader.drop(oid)
                cached = self._large.pop(oid, None)
                if cached is not None:
                    self._large_bytes -= cached[1]
        k = self.keys
        job_keys = k.job_keys(self.job_id)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for oid in oids:
                    pipe.unlink(k.obj(oid), k.done(oid))
                for start in range(0, len(oids), 1000):
                    part = oids[start : start + 1000]
                    pipe.srem(job_keys, *[k.obj(o) for o in part], *[k.done(o) for o in part])
                pipe.execute()
        except redis.RedisError:
            log.debug("could not free %d objects now; the job's cleanup will", len(oids))

    # -- put ---------------------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef[Any]:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                "this, wrap the ObjectRef in a list and call 'put' on it."
            )
        try:
            frames = self.serializer.dumps(value)
        except Exception as exc:
            raise TypeError(f"Could not serialize the value passed to put(): {exc!r}") from exc
        oid = ids.put_id()
        if self.refs.released:
            self._wake.set()  # let the flusher delete what was dropped
        if frames_size(frames) > INLINE_LIMIT:
            # one copy, so later changes to the value do not reach the object;
            # the upload runs in the background (see uploader.py)
            copy = [frozen_copy(f) for f in frames]
            self.uploader.submit(oid, self.job_id, (KIND_VALUE, copy))
            self._large_owned.add(oid)
        else:
            self.store(oid, KIND_VALUE, frames)
        self.refs.own([oid], ready=True)
        ref: ObjectRef[Any] = ObjectRef(oid, self)
        return ref

    def store(self, oid: str, kind: bytes, frames: list[Any]) -> None:
        """Write a small object's record (large ones go through the uploader)."""
        fields = encode_record(kind, frames)
        key = self.keys.obj(oid)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hset(key, "d", fields["d"])
                pipe.sadd(self.keys.job_keys(self.job_id), key)
                pipe.execute()
            self.refs.held[oid] = (kind, frames)
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        except redis.ResponseError as exc:
            from .exceptions import ObjectStoreFullError

            raise ObjectStoreFullError(f"Redis refused to store object {oid}: {exc}") from exc

    # -- notices -----------------------------------------------------------------------
    def _handle_notice(self, raw: bytes) -> str | None:
        """Apply one completion notice; returns the object it made ready."""
        sep = raw.find(b"\0")
        kind = raw[:1]
        try:
            ident = raw[1:sep].decode("ascii") if sep > 1 else ""
        except UnicodeDecodeError:
            ident = ""
        if not _is_notice(kind, ident):
            dead_letters.record(self.client, self.keys, self.inbox, "not a completion notice", raw)
            return None
        if kind == b"t":
            self.in_flight.pop(ident, None)
            return None
        if self.streams:
            tid = ident[: ids.TASK_ID_LEN]
            if tid in self.streams:
                # a generator's items are owned as they arrive
                self.refs.own([ident])
                if ids.index_of(ident) == 0:
                    self.streams.discard(tid)
        data = raw[sep + 1 :]
        held: Held | None = None
        if data:
            try:
                held = (data[:1], list(unpack(memoryview(data)[1:])))
            except ValueError:
                held = None
        self.refs.mark_ready(ident, held)
        self.in_flight.pop(ident[: ids.TASK_ID_LEN], None)
        return ident

    def drain_inbox(self) -> list[str]:
        """Apply every notice already waiting; returns the objects now ready."""
        out: list[str] = []
        while True:
            batch = self.client.lpop(self.inbox, 1000)
            if not batch:
                return out
            for raw in batch:
                oid = self._handle_notice(cast(bytes, raw))
                if oid is not None:
                    out.append(oid)
            if len(batch) < 1000:
                return out

    # -- wait / get --------------------------------------------------------------------
    def _wait_ready(self, oids: Sequence[str], num_needed: int, timeout: float | None) -> set[str]:
        """Block until ``num_needed`` of ``oids`` exist in Redis (or time runs out)."""
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        ready = {o for o in oids if self.refs.is_ready(o)}
        if len(ready) >= num_needed:
            return ready
        if deadline is not None and deadline <= time.monotonic():
            # no time to block: apply the notices already waiting instead
            self.flush()
            self.drain_inbox()
            return {o for o in oids if self.refs.is_ready(o)}
        borrowed = [o for o in dict.fromkeys(oids) if o not in ready and not self.refs.is_owned(o)]
        # With only owned objects to wait for, pending submissions travel in the
        # same round trip as the first BLPOP (the synchronous-task fast path).
        combine = not borrowed and bool(self._pending)
        if not combine:
            self.flush()
        subscribed: list[str] = []
        if borrowed:
            flags = self.scripts.subscribe(self.worker_id, borrowed, True)
            for oid, ok in zip(borrowed, flags):
                if ok:
                    ready.add(oid)
                else:
                    subscribed.append(oid)
        wanted = set(oids)
        blocked = False
        try:
            while len(ready) < num_needed:
                if deadline is None:
                    slice_ = BLOCK_SLICE
                else:
                    slice_ = min(deadline - time.monotonic(), BLOCK_SLICE)
                    if slice_ <= 0:
                        break
                if not blocked and self.on_block is not None:
                    blocked = True
                    self.on_block()
                waiting_borrowed = [o for o in subscribed if o not in ready]
                if combine:
                    combine = False
                    reply = self._submit_and_blpop(min(slice_, COMBINED_BLOCK))
                else:
                    keys = [self.inbox, *[self.keys.done(o) for o in waiting_borrowed]]
                    reply = self.blocking_client.blpop(keys, timeout=max(slice_, 0.001))
                if reply is None:
                    if waiting_borrowed:
                        # re-check: a producer may have finished before we subscribed
                        flags = self.scripts.subscribe(self.worker_id, waiting_borrowed, False)
                        ready.update(o for o, ok in zip(waiting_borrowed, flags) if ok)
                    continue
                key, value = reply
                key = key.decode()
                if key == self.inbox:
                    got = self._handle_notice(value)
                    if got in wanted:
                        ready.add(got)
                    if len(ready) < num_needed:
                        ready.update(o for o in self.drain_inbox() if o in wanted)
                else:
                    ready.add(key[len(self.keys.done("")) :])
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        finally:
            if blocked and self.on_unblock is not None:
                self.on_unblock()
            left = [o for o in subscribed if o not in ready]
            if left:
                try:
                    with self.client.pipeline(transaction=False) as pipe:
                        for oid in left:
                            pipe.srem(self.keys.waiters(oid), "@" + self.worker_id)
                        pipe.execute()
                except redis.RedisError:
                    pass
        return ready

    def _submit_and_blpop(self, timeout: float) -> Any:
        """Send pending submissions and BLPOP the inbox in one round trip."""
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            pipe = Batch(self.blocking_client)
            calls_at = self._queue_batch(pipe, batch)
            pipe.command("BLPOP", self.inbox, max(timeout, 0.001))
            try:
                replies = pipe.execute()
            except redis.RedisError:
                with self._pending_lock:
                    self._pending[:0] = batch
                raise
        self._after_batch(batch, replies, calls_at)
        return replies[-1]

    def wait(
        self, oids: Sequence[str], num_returns: int, timeout: float | None
    ) -> tuple[list[int], list[int]]:
        """Indexes of ready and not-ready objects, in input order."""
        ready = self._wait_ready(oids, num_returns, timeout)
        ready_idx: list[int] = []
        rest: list[int] = []
        for i, oid in enumerate(oids):
            if oid in ready and len(ready_idx) < num_returns:
                ready_idx.append(i)
            else:
                rest.append(i)
        return ready_idx, rest

    def get_values(self, oids: Sequence[str], timeout: float | None) -> list[Any]:
        unique = list(dict.fromkeys(oids))
        ready = self._wait_ready(unique, len(unique), timeout)
        if len(ready) < len(unique):
            missing = [o for o in unique if o not in ready]
            raise GetTimeoutError(
                f"Get timed out: {len(missing)} of {len(unique)} objects were not ready "
                f"after {timeout} s (first: ObjectRef({missing[0]}))."
            )
        records = self._fetch(unique)
        values: dict[str, Any] = {}
        for oid in unique:
            kind, frames = records[oid]
            try:
                value = self.serializer.loads(frames)
            except Exception as exc:
                raise RaySystemError(f"Could not deserialize object {oid}: {exc!r}") from exc
            if kind == KIND_ERROR:
                if isinstance(value, RayTaskError):
                    raise value.as_instanceof_cause()
                if isinstance(value, BaseException):
                    raise value
            values[oid] = value
        return [values[o] for o in oids]

    def _fetch(self, oids: Sequence[str]) -> dict[str, Held]:
        out: dict[str, Held] = {}
        need = []
        for oid in oids:
            held = self.refs.held.get(oid) or self.uploader.local.get(oid)
            if held is None:
                with self._large_lock:
                    cached = self._large.get(oid)
                    if cached is not None:
                        self._large.move_to_end(oid)
                        held = cached[0]
            if held is not None:
                out[oid] = held
            else:
                need.append(oid)
        if not need:
            return out
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for oid in need:
                    pipe.hget(self.keys.obj(oid), "d")
                smalls = pipe.execute()
            records: list[dict[bytes, Any]] = []
            for oid, small in zip(need, smalls):
                # a large record has no 'd' field: read it without extra copies
                records.append(
                    {b"d": small} if small is not None else self.bulk.hgetall(self.keys.obj(oid))
                )
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        for oid, record in zip(need, records):
            if not record:
                raise ObjectLostError(oid)
            try:
                kind, frames = decode_record(record)
            except (ValueError, KeyError) as exc:
                raise RaySystemError(f"Object {oid} has a corrupt record: {exc}") from exc
            if b"d" in record:
                self.refs.hold(oid, (kind, frames))
            else:
                # read-only, as Ray's zero-copy arrays are: a task must not be
                # able to change the cached value the next task will see
                frames = [memoryview(f).toreadonly() for f in frames]
                self._cache_large(oid, (kind, frames))
            out[oid] = (kind, frames)
        return out

    def _cache_large(self, oid: str, held: Held) -> None:
        size = sum(memoryview(f).nbytes for f in held[1])
        if size > LARGE_CACHE_BYTES:
            return
        with self._large_lock:
            if oid in self._large:
                return
            self._large[oid] = (held, size)
            self._large_bytes += size
            while self._large_bytes > LARGE_CACHE_BYTES:
                _, (_, old) = self._large.popitem(last=False)
                self._large_bytes -= old

    # -- results (executors) -------------------------------------------------------------
    def return_value(
        self,
        oid: str,
        kind: bytes,
        frames: list[Any],
        attempt: str,
        *,
        job_id: str | None = None,
        bulk: BulkChannel | None = None,
    ) -> ReturnValue:
        """Prepare one result: small ones inline, large ones written to a staging
        key (listed under ``job_id``, this process's job by default)."""
        fields = encode_record(kind, frames)
        if "d" in fields:
            return ReturnValue(oid, bytes(fields["d"]))
        key = self.keys.staged(oid, attempt)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(key)
            # listed first: a writer killed before publishing leaves nothing behind
            pipe.sadd(self.keys.job_keys(job_id or self.job_id), key)
            pipe.execute()
        (bulk or self.bulk).hset(key, fields)
        return ReturnValue(oid, None, attempt)

    def error_frames(self, error: BaseException) -> list[Any]:
        try:
            return self.serializer.dumps(error)
        except Exception:  # noqa: BLE001 - fall back to a picklable description
            fallback: RayError
            if isinstance(error, RayTaskError):
                cause = RayError(
                    f"The original cause of the RayTaskError ({type(error.cause)}) isn't "
                    f"serializable: {error.cause!r}. Overwriting the cause to a RayError."
                )
                fallback = RayTaskError(error.function_name, error.traceback_str, cause)
            else:
                fallback = RaySystemError(repr(error))
            return self.serializer.dumps(fallback)

    # -- cancel ------------------------------------------------------------------------
    def cancel(self, oid: str, force: bool = False, recursive: bool = True) -> bool:
        """Cancel the task that produces ``oid``.

        A task that has not started is taken out of the scheduler and never
        runs; a running one is interrupted (KeyboardInterrupt in its code) or,
        with ``force``, its executor is killed; with ``recursive`` the tasks it
        submitted are cancelled too. Returns False when the task had already
        finished.
        """
        self.flush()
        tid = ids.task_of(oid)
        actor_id = self.actor_calls.get(tid)
        if actor_id is not None:
            if force:
                raise ValueError("force=True is not supported for actor tasks.")
            self.client.sadd(self.keys.cancelled, tid)
            self.client.publish(self.keys.actor_channel(actor_id), f"cancel {tid}")
            return True
        state = self.scripts.cancel(tid)
        if state == "removed":
            self._publish_cancelled(tid)
            return True
        if state.startswith("R"):
            node_id, _, worker_id = state[1:].partition(" ")
            self.client.sadd(self.keys.cancelled, tid)
            self.client.publish(
                self.keys.control_channel(node_id),
                f"cancel {worker_id} {tid}"
                + (" force" if force else "")
                + ("" if recursive else " shallow"),
            )
            return True
        return False

    def _publish_cancelled(self, tid: str) -> None:
        spec_raw = self.client.hget(self.keys.task_spec, tid)
        from . import task_spec as ts

        try:
            spec = ts.decode(cast(bytes, spec_raw)) if spec_raw else None
        except ValueError:
            spec = None
        indexes = ts.result_indexes(spec) if spec is not None else [1]
        owner = spec.owner if spec is not None else self.worker_id
        job = spec.job_id if spec is not None else self.job_id
        err = TaskCancelledError(tid)
        frames = self.error_frames(err)
        returns = [
            self.return_value(ids.return_id(tid, i), KIND_ERROR, frames, "c") for i in indexes
        ]
        self.scripts.complete(
            task_id=tid, job_id=job, owner=owner, node_id=None, reservation="", returns=returns
        )

    # -- job cleanup ----------------------------------------------------------------------
    def cleanup_job(self, job_id: str) -> None:
        """Delete everything the job left in Redis: pending tasks, objects, functions."""
        k = self.keys
        c = self.client
        c.hdel(k.jobs, job_id)
        c.zrem(k.job_beats, job_id)
        from .actor_lifecycle import kill_job_actors

        kill_job_actors(self, job_id)
        tasks = [cast(bytes, t).decode() for t in c.smembers(k.job_tasks(job_id))]
        for tid in tasks:
            state = self.scripts.cancel(tid)
            if state == "removed":
                with c.pipeline(transaction=False) as pipe:
                    pipe.hdel(k.task_spec, tid)
                    pipe.hdel(k.task_state, tid)
                    pipe.hdel(k.retries, tid)
                    pipe.execute()
        job_keys = k.job_keys(job_id)
        cursor = 0
        while True:
            cursor, members = c.sscan(job_keys, cursor, count=1000)
            if members:
                c.unlink(*members)
            if cursor == 0:
                break
        c.unlink(job_keys, k.job_tasks(job_id))


_HEX = frozenset("0123456789abcdef")


def _is_notice(kind: bytes, ident: str) -> bool:
    """A task-done notice names a task id; an object notice an object id."""
    if kind == b"t":
        return len(ident) == ids.TASK_ID_LEN and _HEX.issuperset(ident)
    return kind == b"o" and len(ident) > ids.TASK_ID_LEN and _HEX.issuperset(ident)


def _describe(need: dict[str, int]) -> str:
    from .resources import from_units

    return ", ".join(f"{k}={from_units(v)}" for k, v in sorted(need.items())) or "no resources"
