"""The object client: put, fetch and free objects in Redis, for one process.

Small values are one hash field (``d``); large ones are written and read on
the raw bulk channel (``bulk.py``) and cached per process (an LRU of read-only
views, like Ray's zero-copy arrays). A large ``put`` returns at once and is
uploaded in the background (``uploader.py``).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import redis

from . import dead_letters, ids
from .buffers import frozen_copy
from .bulk import BulkChannel
from .connections import Batch, connection_error, retrying
from .constants import INLINE_LIMIT, Keys
from .exceptions import ObjectLostError, ObjectStoreFullError, RaySystemError
from .identity import Identity
from .reference_table import Held, ReferenceTable
from .scripts import NO_OWNER, ReturnValue, Scripts
from .serialization import (
    KIND_ERROR,
    KIND_VALUE,
    Serializer,
    decode_record,
    encode_record,
    error_frames,
    frames_size,
)
from .settings import Settings
from .signing import SignatureError, Signer
from .uploader import ATTEMPT, Uploader

log = logging.getLogger(__name__)

#: Bytes of large fetched objects a process keeps for reuse.
LARGE_CACHE_BYTES = 512 * 1024 * 1024


class ObjectClient:
    def __init__(
        self,
        settings: Settings,
        keys: Keys,
        client: redis.Redis,
        scripts: Scripts,
        refs: ReferenceTable,
        serializer: Serializer,
        identity: Identity,
        signer: Signer,
    ) -> None:
        self.settings = settings
        self.signer = signer
        self.keys = keys
        self.client = client
        self.scripts = scripts
        self.refs = refs
        self.serializer = serializer
        self.identity = identity
        self.bulk = BulkChannel(settings)
        #: large objects already fetched (immutable, so safe to reuse), LRU
        self._large: OrderedDict[str, tuple[Held, int]] = OrderedDict()
        self._large_bytes = 0
        self._large_lock = threading.Lock()
        #: owned objects too big to leave in Redis until the next batch of frees
        self.large_owned: set[str] = set()
        #: large put objects on their way to Redis
        self.uploader = Uploader(settings, self._upload, self.cache_large, self._unlink)
        # a pickled ObjectRef may be on its way to another process
        refs.on_escape = lambda oid: self.uploader.expedite((oid,))

    def close(self) -> None:
        self.uploader.stop()
        self.bulk.close()

    # -- put ---------------------------------------------------------------------------
    def put(self, frames: list[Any], *, oid: str | None = None, kind: bytes = KIND_VALUE) -> str:
        """Store a value's frames as a new object this process owns; its id.
        ``oid`` / ``kind``: local mode stores a task's results (and errors) so."""
        oid = oid or ids.put_id()
        if kind == KIND_VALUE and frames_size(frames) > INLINE_LIMIT:
            # one copy, so later changes to the value do not reach the object;
            # the upload runs in the background (see uploader.py)
            copy = [frozen_copy(f) for f in frames]
            self.uploader.submit(oid, self.identity.job_id, (KIND_VALUE, copy))
            self.large_owned.add(oid)
        else:
            self.store(oid, kind, frames)
        self.refs.own([oid], ready=True)
        return oid

    def store(self, oid: str, kind: bytes, frames: list[Any]) -> None:
        """Write a small object's record (large ones go through the uploader).
        Idempotent: re-sent after a lost reply."""
        fields = encode_record(kind, frames, self.signer, oid)
        key = self.keys.obj(oid)
        job_keys = self.keys.job_keys(self.identity.job_id)

        def write() -> None:
            # on the scripts' kept connection: a pooled pipeline cost a small
            # put a third of its time in redis-py's bookkeeping
            pipe = self.scripts.batch()
            pipe.command("HSET", key, "d", fields["d"])
            pipe.command("SADD", job_keys, key)
            pipe.execute()

        try:
            retrying(self.settings, write)
            self.refs.held[oid] = (kind, frames)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise connection_error(self.settings, exc) from exc
        except RaySystemError as exc:  # e.g. OOM: maxmemory reached
            raise ObjectStoreFullError(
                f"Redis refused to store object {oid}: {exc.__cause__ or exc}"
            ) from exc

    def _upload(self, oid: str, job_id: str, held: Held, bulk: BulkChannel) -> None:
        """The uploader's step: stage the record, then publish it like a
        task's large result, so waiting tasks and borrowers wake."""
        kind, frames = held
        try:
            ret = self.return_value(oid, kind, list(frames), ATTEMPT, job_id=job_id, bulk=bulk)
        except redis.ResponseError as exc:  # e.g. OOM: maxmemory reached
            err = ObjectStoreFullError(f"Redis refused to store object {oid}: {exc}")
            log.error("%s", err)
            ret = self.return_value(oid, KIND_ERROR, self.error_frames(err), ATTEMPT, job_id=job_id)
        self.scripts.complete(
            task_id=ids.task_of(oid), job_id=job_id, owner=NO_OWNER, node_id=None, returns=[ret]
        )

    # -- results -----------------------------------------------------------------------
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
        key (listed under ``job_id``, this process's job by default).
        Idempotent: the staging key is rewritten from scratch."""
        bulk = bulk or self.bulk
        # an upload whose object is freed stops hashing as it stops sending
        fields = encode_record(kind, frames, self.signer, oid, bulk.check)
        if "d" in fields:
            return ReturnValue(oid, bytes(fields["d"]))
        key = self.keys.staged(oid, attempt)
        job_keys = self.keys.job_keys(job_id or self.identity.job_id)

        def reset() -> None:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(key)
                # listed first: a writer killed before publishing leaves nothing behind
                pipe.sadd(job_keys, key)
                pipe.execute()

        reset()
        bulk.hset(key, fields)
        return ReturnValue(oid, None, attempt)

    def error_frames(self, error: BaseException) -> list[Any]:
        return error_frames(self.serializer, error)

    # -- fetch ---------------------------------------------------------------------------
    def fetch(self, oids: Sequence[str]) -> dict[str, Held]:
        """The records of objects that exist (ObjectLostError for one that does not)."""
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

        def read() -> list[dict[bytes, Any]]:
            with self.client.pipeline(transaction=False) as pipe:
                for oid in need:
                    pipe.hget(self.keys.obj(oid), "d")
                smalls = pipe.execute()
            # a large record has no 'd' field: read it without extra copies
            return [
                {b"d": small} if small is not None else self.bulk.hgetall(self.keys.obj(oid))
                for oid, small in zip(need, smalls)
            ]

        try:
            records = read()
        except redis.ConnectionError as exc:
            raise connection_error(self.settings, exc) from exc
        for oid, record in zip(need, records):
            if not record:
                raise ObjectLostError(oid)
            try:
                kind, frames = decode_record(record, self.signer, oid)
            except SignatureError as exc:
                dead_letters.record(
                    self.client, self.keys, self.keys.obj(oid), f"signature check: {exc}", b""
                )
                raise RaySystemError(
                    f"Object {oid} failed its signature check, so it was not unpickled: {exc}."
                ) from None
            except (ValueError, KeyError) as exc:
                raise RaySystemError(f"Object {oid} has a corrupt record: {exc}") from exc
            if b"d" in record:
                self.refs.hold(oid, (kind, frames))
            else:
                # read-only, as Ray's zero-copy arrays are: a task must not be
                # able to change the cached value the next task will see
                frames = [memoryview(f).toreadonly() for f in frames]
                self.cache_large(oid, (kind, frames))
            out[oid] = (kind, frames)
        return out

    def cache_large(self, oid: str, held: Held) -> None:
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

    # -- free ----------------------------------------------------------------------------
    def free(self, oids: list[str]) -> None:
        """Delete owned objects whose last ObjectRef is gone (best effort:
        the job's cleanup deletes what a failure here leaves)."""
        self.large_owned.difference_update(oids)
        with self._large_lock:
            for oid in oids:
                self.uploader.drop(oid)
                cached = self._large.pop(oid, None)
                if cached is not None:
                    self._large_bytes -= cached[1]
        k = self.keys
        job_keys = k.job_keys(self.identity.job_id)
        # one UNLINK and one SREM per thousand objects (all share the hash tag)
        pipe = Batch(self.client)
        for start in range(0, len(oids), 1000):
            part = [key for o in oids[start : start + 1000] for key in (k.obj(o), k.done(o))]
            pipe.command("UNLINK", *part)
            pipe.command("SREM", job_keys, *part)
        try:
            pipe.execute()
        except (redis.RedisError, RaySystemError):
            log.debug("could not free %d objects now; the job's cleanup will", len(oids))

    def _unlink(self, oid: str, job_id: str) -> None:
        """Free an uploaded object, or one whose upload was given up half-way
        (its staging key, listed under the job, may exist then)."""
        k = self.keys
        gone = (k.obj(oid), k.done(oid), k.staged(oid, ATTEMPT))
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.unlink(*gone)
                pipe.srem(k.job_keys(job_id), *gone)
                pipe.execute()
        except redis.RedisError:
            log.debug("could not free object %s now; the job's cleanup will", oid)
