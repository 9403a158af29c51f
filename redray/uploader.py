"""Large ``put`` objects: kept in the process, sent to Redis in the background.

``put`` of a value whose record is larger than the inline limit copies its
frames once into this process and returns, as Ray's put into its local object
store does. A background thread then writes the record to a staging key (on
its own raw connection) and publishes it with ``complete.lua``, which makes the
object exist for every other process and wakes the tasks and borrowers that
wait for it, exactly as a task's large result is published. Until then
``get`` in this process reads the local copy (read-only, no copy); a task
that takes the object as an argument simply waits for it like for any input.

An upload starts ``DELAY`` seconds after its ``put``, or at once when the
object leaves this process first: a task or actor call takes it as an
argument, a value holding its ObjectRef is pickled (a nested argument, a
result, another put), or a task's results are about to be published
(``wait_idle``). An object whose last ObjectRef goes before its upload
started is never sent; one in flight is given up between two slices of its
hashing or its write (the connection is closed, so the server stores
nothing) or, if it has been sent, freed once it lands. (A loop of
``ray.get(ray.put(x))`` on 100 MB arrays otherwise sent every array to Redis,
to delete it at once: the sending took the CPU the next copy needed. Ray's
put, likewise, leaves the object in the local store until someone needs it.)
While Redis is unreachable the upload is retried; a record Redis refuses
(``maxmemory``) is replaced by an ``ObjectStoreFullError``, so readers
elsewhere get that error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

import redis

from .bulk import Aborted, BulkChannel
from .reference_table import Held
from .settings import Settings

log = logging.getLogger(__name__)

#: The staging attempt name of uploads: ``{prefix}:obj:<id>:su``.
ATTEMPT = "u"

#: (object id, job id, record, bulk channel): stage and publish one object
Publish = Callable[[str, str, Held, BulkChannel], None]

#: Seconds an upload waits for its object to be dropped or to leave this
#: process. Anything that hands the object to another process without one
#: of the triggers above only waits this long for it.
DELAY = 0.05


class Uploader:
    def __init__(
        self,
        settings: Settings,
        publish: Publish,
        landed: Callable[[str, Held], None],
        unlink: Callable[[str, str], None],
    ) -> None:
        self._publish = publish
        self._landed = landed
        self._unlink = unlink
        #: copies not in Redis yet, by object id (read by ``get`` in this process)
        self.local: dict[str, Held] = {}
        #: uploads not started, in the order they start: (job id, record, due
        #: time on this process's monotonic clock; 0 when expedited)
        self._queue: OrderedDict[str, tuple[str, Held, float]] = OrderedDict()
        self._current: str | None = None
        self._free_after: set[str] = set()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._bulk = BulkChannel(settings)
        self._bulk.abort_if = self._dropped_in_flight

    def _dropped_in_flight(self) -> bool:
        # read without the lock: a set lookup, and a stale answer only
        # delays the give-up to the next slice
        current = self._current
        return current is not None and current in self._free_after

    def submit(self, oid: str, job_id: str, held: Held) -> None:
        with self._cond:
            self.local[oid] = held
            self._queue[oid] = (job_id, held, time.monotonic() + DELAY)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="redray-upload", daemon=True)
                self._thread.start()
            self._cond.notify()

    def expedite(self, oids: Iterable[str]) -> None:
        """These objects leave this process: upload them now, not after ``DELAY``."""
        if not self._queue:
            return  # the common case, read without the lock: nothing waits
        with self._cond:
            moved = False
            for oid in oids:
                entry = self._queue.get(oid)
                if entry is not None and entry[2]:
                    self._queue[oid] = (entry[0], entry[1], 0.0)
                    self._queue.move_to_end(oid, last=False)
                    moved = True
            if moved:
                self._cond.notify()

    def drop(self, oid: str) -> None:
        """The object's last ObjectRef is gone: skip or undo its upload."""
        with self._cond:
            self.local.pop(oid, None)
            if self._queue.pop(oid, None) is None and oid == self._current:
                self._free_after.add(oid)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Upload everything submitted now and block until it landed; False
        on timeout."""
        self.expedite(list(self._queue))
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._current is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Forget what has not started; let the upload in flight land."""
        with self._cond:
            self._queue.clear()
            self.local.clear()
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._bulk.close()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    if not self._queue:
                        self._cond.wait()
                        continue
                    oid, (job_id, held, due) = next(iter(self._queue.items()))
                    wait = due - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._stopped:
                    return
                del self._queue[oid]
                self._current = oid
            try:
                self._upload(oid, job_id, held)
            except Aborted:
                pass  # freed while it was sent: unlinked below
            except Exception:  # noqa: BLE001 - one object must not stop the others
                log.exception("could not upload object %s", oid)
            with self._cond:
                self._current = None
                freed = oid in self._free_after
                self._free_after.discard(oid)
                kept = self.local.pop(oid, None)
                self._cond.notify_all()
            if freed:
                self._unlink(oid, job_id)
            elif kept is not None:
                # in Redis now: the copy becomes an ordinary (evictable) cache entry
                self._landed(oid, kept)

    def _upload(self, oid: str, job_id: str, held: Held) -> None:
        # staging and publishing are both idempotent: retried until Redis is back
        delay = 0.1
        while not self._stopped:
            try:
                self._publish(oid, job_id, held, self._bulk)
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
