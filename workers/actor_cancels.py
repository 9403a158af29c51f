"""cancel() reaching an actor's calls.

``cancel <task id>`` messages come on the actor's channel; one made while the
actor was not listening is only in the actor's cancel set in Redis, read at
every (re)subscribe. A call still in the mailbox is answered with
TaskCancelledError when its turn comes; a running call of an async actor is
cancelled through asyncio.
"""

from __future__ import annotations

import asyncio
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redray.connections import TRANSIENT
from redray.runtime import Runtime


class Cancels:
    """The calls of this actor that cancel() reached, and the channel it says so on."""

    def __init__(self, runtime: Runtime, actor_id: str) -> None:
        self.rt = runtime
        self.keys = runtime.keys
        self.actor_id = actor_id
        #: calls cancel() reached (heard on the actor's channel)
        self.cancelled: set[str] = set()
        #: running async calls by task id, with their loop, to cancel through asyncio
        self.tasks: dict[str, tuple[asyncio.Task[Any], asyncio.AbstractEventLoop]] = {}
        self.control: Any = None
        self._poll_lock = threading.Lock()

    def listen(self) -> None:
        """(Re)subscribe to the actor's wake channel, then read its cancel set:
        a cancel() made while we were not listening is only there."""
        with self._poll_lock:
            old, self.control = self.control, None
            if old is not None:
                try:
                    old.close()
                except Exception:  # noqa: BLE001 - it is being replaced
                    pass
            try:
                # as Any: redis-py types pubsub() from 8.2 on, not before
                single: Any = self.rt.cluster.single
                control = single.pubsub(ignore_subscribe_messages=True)
                control.subscribe(self.keys.actor_channel(self.actor_id))
                self.control = control
            except TRANSIENT:
                return  # the next reconnect tries again
            early: Any = self.rt.client.smembers(self.keys.actor_cancelled(self.actor_id))
            self.cancelled.update(m.decode(errors="replace") for m in early)

    @contextmanager
    def cancellable(self, task_id: str) -> Iterator[None]:
        """Within: a cancel() of ``task_id`` cancels the asyncio task running it."""
        current = asyncio.current_task()
        if current is not None:
            self.tasks[task_id] = (current, asyncio.get_running_loop())
        try:
            yield
        finally:
            self.tasks.pop(task_id, None)

    def poll(self, timeout: float = 0) -> None:
        """Apply 'cancel <task id>' messages heard on the actor's channel.

        One reader at a time: the threads of a threaded actor all poll, and two
        readers of one connection can each see it readable while only one finds
        the message, leaving the other blocked in a read (its call's result
        then never goes out)."""
        with self._poll_lock:
            self._poll(timeout)

    def _poll(self, timeout: float) -> None:
        if timeout == 0 and not self._control_readable():
            return
        while self.control is not None:
            try:
                msg = self.control.get_message(timeout=timeout)
            except Exception:  # noqa: BLE001 - the channel is best effort
                return
            if msg is None:
                return
            data = msg.get("data")
            if isinstance(data, bytes) and data.startswith(b"cancel "):
                tid = data[7:].decode(errors="replace")
                self.cancelled.add(tid)
                running = self.tasks.get(tid)
                if running is not None:
                    task, loop = running
                    loop.call_soon_threadsafe(task.cancel)

    def _control_readable(self) -> bool:
        """Whether a message may be waiting on the actor's channel: one poll(2)
        of its socket, run before every call, instead of redis-py's read path
        (each loop above reads until nothing is buffered in the client)."""
        sock = getattr(getattr(self.control, "connection", None), "_sock", None)
        if sock is None:
            return self.control is not None  # not connected yet: take the slow path
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True
