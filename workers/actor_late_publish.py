"""A synchronous actor's finished calls, published while a later call runs.

A synchronous actor runs the calls of one mailbox read in order and sends
their results with its next read, in one round trip (``serve_in_order``).
A call that runs long must not hold back the results of the calls before
it: their callers would wait for it (Ray returns each call's result when the
call ends), and a caller that waits for call 1 before it lets call 2 finish
would wait forever. So once a call has run ``DELAY`` seconds while results
of earlier calls are held, this thread publishes them.

It costs nothing where a read brings one call (the synchronous ``get`` after
each call): nothing is held when a call starts. While reads bring several
calls it looks every ``DELAY`` seconds, and is woken from its sleep only
once the actor has been quiet for ``AWAKE`` seconds, so a busy actor pays
at most 1 / ``DELAY`` thread wake-ups a second, never one per read.
"""

from __future__ import annotations

import logging
import threading
import time

from .actor_mailbox import Done, Mailbox

log = logging.getLogger("redray.actor")

#: seconds a later call runs before the results held for it are published
DELAY = 0.02
#: seconds the thread keeps looking after it last saw results held
AWAKE = 1.0


class LatePublisher:
    """Holds a read's finished calls for the main thread's next round trip,
    and publishes them itself if a later call runs past ``DELAY``."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self._cond = threading.Condition()
        self._held: list[Done] = []
        #: when the call after the held results started (0: none runs)
        self._since = 0.0
        self._publishing = False
        self._closed = False
        #: waiting with no timeout (only then does ``starting`` wake it)
        self._sleeping = False
        self._thread = threading.Thread(target=self._run, name="redray-actor-publish", daemon=True)
        self._thread.start()

    def starting(self) -> None:
        """A call starts: if results are held, they wait for it from now on."""
        with self._cond:
            if self._held and not self._since:
                self._since = time.monotonic()
                if self._sleeping:
                    self._cond.notify()

    def finished(self, item: Done) -> None:
        with self._cond:
            self._held.append(item)
            self._since = 0.0

    def take(self) -> list[Done]:
        """The read's calls are done: what is not published yet, for the main
        thread to send with its next read (after a publish in flight ends, so
        nothing is published by both)."""
        with self._cond:
            while self._publishing:
                self._cond.wait()
            items, self._held, self._since = self._held, [], 0.0
            return items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _due(self) -> list[Done] | None:
        """Wait until held results are due; None once closed."""
        seen = time.monotonic()
        while not self._closed:
            now = time.monotonic()
            if self._since:
                seen = now
                if now - self._since >= DELAY and self._held:
                    # a call that asked the actor to end is the main thread's to publish
                    n = next((i for i, d in enumerate(self._held) if d.terminate), len(self._held))
                    if n:
                        items, self._held = self._held[:n], self._held[n:]
                        return items
            if now - seen < AWAKE:
                self._cond.wait(DELAY)
            else:
                self._sleeping = True
                self._cond.wait()
                self._sleeping = False
                seen = time.monotonic()
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._due()
                if items is None:
                    return
                self._publishing = True
            try:
                self.mailbox.publish(items)
                items = []
            except BaseException:  # noqa: BLE001 - the main thread publishes them instead
                log.debug("publishing finished calls early failed", exc_info=True)
            finally:
                with self._cond:
                    self._held[:0] = items
                    self._publishing = False
                    self._cond.notify_all()
