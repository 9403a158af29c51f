"""The per-process runtime: one in each driver and each executor process
(Ray's "core worker"), composed of parts that each read in one sitting:

* ``Cluster`` (cluster.py): settings, keys, clients and scripts;
* ``Submitter`` (submitter.py): the submission buffer and its flusher thread;
* ``Inbox`` (inbox.py): completion notices, ``wait`` and the waiting half of ``get``;
* ``ObjectClient`` (objects.py): put, fetch, free, large-object cache and uploads;
* ``Registry`` (registry.py): functions and resource shapes, uploaded once;
* ``ReferenceTable`` (reference_table.py): live refs and tasks in flight;
* ``JobHeartbeat`` (jobs.py): a driver's heartbeat thread.

This class wires them together and keeps the few operations that span
several of them (``get_values``, ``submit``, ``cancel``).
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from . import cancellation, jobs
from .cluster import Cluster
from .connections import TRANSIENT
from .constants import INLINE_LIMIT
from .exceptions import GetTimeoutError, RaySystemError, RayTaskError
from .identity import Identity
from .inbox import Inbox
from .object_ref import ObjectRef
from .objects import ObjectClient
from .recovery import fail_task
from .reference_table import Held, ReferenceTable
from .registry import Registry
from .scripts import ReturnValue
from .serialization import KIND_ERROR, Serializer, frames_size
from .settings import Settings
from .submitter import Submitter

_UNSET: Any = object()
#: the task the current thread or asyncio task runs (see Runtime.current_task)
_CURRENT_TASK: contextvars.ContextVar[Any] = contextvars.ContextVar("redray_current_task")

log = logging.getLogger(__name__)

#: Frees are sent in batches of this many, or after FREE_INTERVAL seconds.
FREE_BATCH = 256
FREE_INTERVAL = 0.1


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
        self.cluster = Cluster.connect(settings, serializer)
        self.settings = settings
        self.keys = self.cluster.keys
        self.client = self.cluster.client
        self.scripts = self.cluster.scripts
        self.serializer = self.cluster.serializer
        self.signer = self.cluster.signer
        self.identity = Identity(worker_id, job_id, namespace, node_id)
        #: the task an executor is running (None in a driver): per thread and
        #: per asyncio task, since a threaded or async actor runs several
        #: calls at once (see current_task)
        self._task_main: Any = None
        #: set in an actor's process
        self.current_actor: Any = None
        #: cancel() reached the task this executor runs (get_runtime_context().is_canceled())
        self.cancel_requested = False
        #: tasks submitted by the task this executor runs (cancelled with it)
        self.children: list[str] = []
        self.refs = ReferenceTable()
        self.objects = ObjectClient(
            settings,
            self.keys,
            self.client,
            self.scripts,
            self.refs,
            self.serializer,
            self.identity,
            self.signer,
        )
        self.registry = Registry(
            settings, self.keys, self.client, self.scripts, self.identity, self.signer
        )
        self._free_lock = threading.Lock()
        self._last_free = 0.0
        self._closed = False
        self.inbox: Inbox | None = None
        self.submitter = Submitter(
            settings,
            self.scripts,
            self.refs,
            self.identity,
            self.objects.error_frames,
            self._housekeeping,
            self.signer,
        )
        self.inbox = Inbox(self.cluster, self.refs, self.identity, self.submitter)
        self.inbox.on_rejected = self._task_rejected
        #: a driver heartbeats its job so the cluster can clean up after it dies
        self.heartbeat: jobs.JobHeartbeat | None = None
        if heartbeat:
            self.start_heartbeat()

    def start_heartbeat(self) -> None:
        """Heartbeat this process's job (a driver's), and learn when it is reaped."""
        assert self.inbox is not None
        if self.heartbeat is None:
            self.inbox.watch_job = True
            self.heartbeat = jobs.JobHeartbeat(self.cluster, self.job_id, self.inbox.job_reaped)

    # -- identity ------------------------------------------------------------------------
    @property
    def job_id(self) -> str:
        return self.identity.job_id

    @job_id.setter
    def job_id(self, value: str) -> None:
        self.identity.job_id = value

    @property
    def worker_id(self) -> str:
        return self.identity.worker_id

    @property
    def namespace(self) -> str:
        return self.identity.namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self.identity.namespace = value

    @property
    def node_id(self) -> str | None:
        return self.identity.node_id

    @property
    def uploader(self) -> Any:
        return self.objects.uploader

    # -- lifecycle -----------------------------------------------------------------------
    def stop_flusher(self) -> None:
        """Send what is buffered and free what is due, then stop the flusher
        thread and the heartbeat (no write may follow a job's cleanup)."""
        try:
            self.submitter.stop()
            self._free_now()
        finally:
            if self.heartbeat is not None:
                self.heartbeat.stop()
            self.objects.uploader.stop()

    def close(self) -> None:
        if self._closed:
            return
        try:
            self.stop_flusher()
        finally:
            self._closed = True
            self.refs.forget_all()
            self.objects.close()
            self.cluster.close()

    def _task_rejected(self, task_id: str, why: str) -> None:
        """A worker refused a task of this process without running it (its
        spec failed its signature check): its results become that error, for
        this process and for anything that waits on them."""
        oids = self.refs.pending_returns(task_id)
        if not oids:
            return
        err = RaySystemError(f"Task {task_id} was not run: {why}")
        try:
            fail_task(self.cluster, task_id, self.job_id, self.worker_id, oids, err)
        except TRANSIENT:
            log.warning("could not publish the rejection of task %s; its get re-checks", task_id)

    # -- housekeeping (the flusher thread) --------------------------------------------------
    def _housekeeping(self, periodic: bool) -> None:
        """Free what is due; every 0.2 s (``periodic``) also apply the notices
        no wait is reading, so dropped refs and held arguments go while the
        job runs."""
        if self._free_due():
            self._free_now()
        if periodic and self.inbox is not None:
            self.inbox.drain_if_idle()
        if periodic:
            self.registry.infeasible.recheck()

    def _free_due(self) -> bool:
        """Batch deletions: free when many are due, a large object is among
        them, or the last free was a while ago."""
        refs = self.refs
        due = len(refs.to_free) + len(refs.released)
        if not due:
            return False
        if due >= FREE_BATCH or time.monotonic() - self._last_free >= FREE_INTERVAL:
            return True
        try:
            return any(oid in self.objects.large_owned for oid in list(refs.released))
        except RuntimeError:  # the deque grew while we looked: free now
            return True

    def _free_now(self) -> None:
        with self._free_lock:
            self._last_free = time.monotonic()
            oids = self.refs.take_to_free()
            if oids:
                self.objects.free(oids)

    # -- functions and shapes ------------------------------------------------------------
    def function_key(self, fn: Any, name: str) -> tuple[str, str]:
        return self.registry.function_key(fn, name)

    def check_shape(self, shape: str, what: str) -> None:
        self.registry.check_shape(shape, what)

    # -- submit --------------------------------------------------------------------------
    @property
    def current_task(self) -> Any:
        """The TaskContext of the call this thread (or asyncio task) runs: the
        one it set, else (threads the user started) the main thread's."""
        task = _CURRENT_TASK.get(_UNSET)
        return self._task_main if task is _UNSET else task

    @current_task.setter
    def current_task(self, task: Any) -> None:
        # a ContextVar, not a threading.local: each asyncio task has its own
        # copy, so concurrent calls of an async actor each see their own
        _CURRENT_TASK.set(task)
        if threading.current_thread() is threading.main_thread():
            self._task_main = task

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
        self.inbox_check()
        if self.current_task is not None:
            self.children.append(task_id)
        self.objects.uploader.expedite(deps)  # a put the task takes: no upload delay
        self.submitter.enqueue("task", task_id, spec, shape, deps, holds, returns)

    def submit_actor_call(
        self,
        actor_id: str,
        task_id: str,
        spec: bytes,
        holds: list[ObjectRef[Any]] | None,
        returns: list[str],
    ) -> None:
        """Queue an actor method call; it reaches the mailbox in submission order."""
        self.inbox_check()
        self.refs.calls[task_id] = actor_id
        if holds:
            self.objects.uploader.expedite([ref.hex() for ref in holds])
        self.submitter.enqueue("call", task_id, spec, actor_id, (), holds, returns)

    def inbox_check(self) -> None:
        """JobReapedError once the cluster reaped this driver's job."""
        if self.inbox is not None:
            self.inbox.check_job()

    def flush(self) -> None:
        self.submitter.flush()

    def settle(self) -> None:
        """Before a task's results go out: what it submitted and what it put
        must be in Redis first, since the results may name them."""
        self.submitter.flush()
        self.objects.uploader.wait_idle()

    # -- put / get / wait ----------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef[Any]:
        if isinstance(value, ObjectRef):
            raise TypeError(
                "Calling 'put' on an ObjectRef is not allowed. If you really want to do "
                "this, wrap the ObjectRef in a list and call 'put' on it."
            )
        self.inbox_check()
        try:
            frames = self.serializer.dumps(value)
        except Exception as exc:
            raise TypeError(f"Could not serialize the value passed to put(): {exc!r}") from exc
        if self.refs.released:
            if frames_size(frames) > INLINE_LIMIT:
                # a large put keeps a private copy until its ObjectRef goes:
                # free the copies already dropped before making another (a
                # loop of large puts would outrun the flusher, which a long
                # copy holding the GIL starves, and memory would only grow)
                self._free_now()
            else:
                self.submitter.wake()  # let the flusher delete what was dropped
        oid = self.objects.put(frames)
        return ObjectRef(oid, self)

    def wait_ready(self, oids: Sequence[str], num_needed: int, timeout: float | None) -> set[str]:
        assert self.inbox is not None
        return self.inbox.wait_ready(oids, num_needed, timeout)

    def wait(
        self, oids: Sequence[str], num_returns: int, timeout: float | None
    ) -> tuple[list[int], list[int]]:
        """Indexes of ready and not-ready objects, in input order."""
        ready = self.wait_ready(oids, num_returns, timeout)
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
        assert self.inbox is not None
        ready = self.inbox.wait_ready(unique, len(unique), timeout, until_error=len(unique) > 1)
        if len(ready) < len(unique):
            failed = [o for o in unique if o in ready and self.refs.is_error(o)]
            if failed:
                unique = failed  # raised below, before the others are ready
            else:
                missing = [o for o in unique if o not in ready]
                raise GetTimeoutError(
                    f"Get timed out: {len(missing)} of {len(unique)} objects were not ready "
                    f"after {timeout} s (first: ObjectRef({missing[0]}))."
                )
        records = self.fetch(unique)
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

    def fetch(self, oids: Sequence[str]) -> dict[str, Held]:
        return self.objects.fetch(oids)

    # -- results (executors) -------------------------------------------------------------
    def return_value(
        self, oid: str, kind: bytes, frames: list[Any], attempt: str, **kw: Any
    ) -> ReturnValue:
        return self.objects.return_value(oid, kind, frames, attempt, **kw)

    def error_frames(self, error: BaseException) -> list[Any]:
        return self.objects.error_frames(error)

    # -- cancel / cleanup ----------------------------------------------------------------
    def cancel(self, oid: str, force: bool = False, recursive: bool = True) -> bool:
        """Cancel the task that produces ``oid`` (see cancellation.py);
        False when it had already finished."""
        return cancellation.cancel(
            self.cluster, self.submitter, self.refs, oid, force=force, recursive=recursive
        )

    def cleanup_job(self, job_id: str) -> bool:
        return jobs.cleanup_job(self.cluster, job_id)
