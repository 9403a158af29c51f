"""What tasks and actors print, shipped to the driver that owns them.

An executor replaces its ``sys.stdout`` and ``sys.stderr`` with streams that
still write to the node's log (as before) and also collect whole lines,
tagged with the job, task and actor that wrote them and the name the driver
shows them under (``f``, ``Counter``). A flusher thread sends what was
collected every ``FLUSH_S`` seconds, one pipeline per batch, to the job's
log stream (``Keys.job_logs``): capped at ``STREAM_MAXLEN`` entries, expiring
``STREAM_TTL_S`` after its last write, so memory stays bounded however much a
job prints and whenever it ends. ``logging`` from a task goes the same way:
the root logger writes to whatever ``sys.stderr`` is when it emits.

Printing never waits on Redis: lines wait in a bounded buffer (the oldest go
first, counted, when Redis is away longer than the buffer lasts).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections import deque
from typing import Any, TextIO

import redis

from redray.constants import Keys
from redray.identity import node_ip

log = logging.getLogger(__name__)

#: how often collected lines are sent
FLUSH_S = 0.1
#: entries a job's log stream keeps (XADD MAXLEN ~)
STREAM_MAXLEN = 10_000
#: a job's log stream expires this long after its last write
STREAM_TTL_S = 3600
#: lines waiting to be sent, at most (the oldest are dropped past it)
BUFFER_LINES = 20_000
#: one line's length at most (the rest is cut, said with "...")
LINE_LIMIT = 16_384


class _Source:
    """Who is printing now: the task or actor this executor runs."""

    def __init__(self) -> None:
        self.job_id = ""
        self.name = ""
        self.task_id = ""
        self.actor_id = ""


class Capture:
    """Collects this executor's output per line and ships it to Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, node_id: str) -> None:
        self.client = client
        self.keys = keys
        self.node_id = node_id
        self.pid = str(os.getpid())
        self.ip = node_ip()
        self.source = _Source()
        self._lines: deque[dict[str, str]] = deque(maxlen=BUFFER_LINES)
        self._partial: dict[str, str] = {"out": "", "err": ""}
        self._lock = threading.Lock()
        # one send at a time: batches reach the stream in the order they were taken
        self._send_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0

    # -- the executor's side ------------------------------------------------------------
    def install(self) -> None:
        """Route sys.stdout, sys.stderr and root logging through here."""
        node_stderr = sys.stderr
        sys.stdout = _Stream(self, "out", sys.stdout)
        sys.stderr = _Stream(self, "err", node_stderr)
        root = logging.getLogger()
        # the node's handler wrote to the node's stderr with the node's format;
        # a task's records go to the task's stderr, formatted as Python does
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(_CurrentStderr())
        # redray's own records stay in the node's log, not the driver's terminal
        ours = logging.getLogger("redray")
        ours.propagate = False
        node_log = logging.StreamHandler(node_stderr)
        node_log.setFormatter(logging.Formatter("(redray node) %(levelname)s %(message)s"))
        ours.addHandler(node_log)
        self._thread = threading.Thread(target=self._flusher, name="output", daemon=True)
        self._thread.start()

    def task_started(self, job_id: str, name: str, task_id: str, actor_id: str = "") -> None:
        self.flush_partial()
        source = self.source
        source.job_id, source.name, source.task_id, source.actor_id = (
            job_id,
            name,
            task_id,
            actor_id,
        )

    def task_ended(self) -> None:
        """Lines the task left without a newline still belong to it."""
        self.flush_partial()

    def stop(self) -> None:
        self.flush_partial()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._send()

    # -- the streams' side --------------------------------------------------------------
    def write(self, kind: str, text: str) -> None:
        if not self.source.job_id:
            return  # no task runs: the executor's own output stays in the node's log
        with self._lock:
            data = self._partial[kind] + text
            *lines, self._partial[kind] = data.split("\n")
            for line in lines:
                self._append(kind, line)

    def flush_partial(self) -> None:
        with self._lock:
            for kind, rest in self._partial.items():
                if rest:
                    self._append(kind, rest)
                    self._partial[kind] = ""

    def _append(self, kind: str, line: str) -> None:
        if len(line) > LINE_LIMIT:
            line = line[:LINE_LIMIT] + "..."
        if len(self._lines) == self._lines.maxlen:
            self.dropped += 1
        source = self.source
        self._lines.append(
            {
                "j": source.job_id,
                "k": kind,
                "n": source.name,
                "t": source.task_id,
                "a": source.actor_id,
                "l": line,
            }
        )

    # -- shipping -----------------------------------------------------------------------
    def _flusher(self) -> None:
        while not self._stop.wait(FLUSH_S):
            self._send()

    def _send(self) -> None:
        with self._send_lock:
            self._send_batch()

    def _send_batch(self) -> None:
        with self._lock:
            batch = list(self._lines)
            self._lines.clear()
        if not batch:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                touched = set()
                for entry in batch:
                    job = entry.pop("j")
                    key = self.keys.job_logs(job)
                    fields = {**entry, "p": self.pid, "i": self.ip, "o": self.node_id}
                    pipe.xadd(key, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
                    touched.add(key)
                for key in touched:
                    pipe.expire(key, STREAM_TTL_S)
                pipe.execute()
        except redis.RedisError as exc:
            # XADD is not idempotent: a batch whose reply was lost is not re-sent
            # (a line twice is worse than a line missing from the driver's terminal;
            # the node's log has every line)
            log.debug("could not send %d output lines: %s", len(batch), exc)


class _Stream:
    """A text stream that writes to ``original`` and to the capture."""

    def __init__(self, capture: Capture, kind: str, original: TextIO) -> None:
        self.capture = capture
        self.kind = kind
        self.original = original

    def write(self, text: str) -> int:
        written = self.original.write(text)
        try:
            self.capture.write(self.kind, text)
        except Exception:  # noqa: BLE001 - printing must never fail a task
            pass
        return written

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> Any:
        # encoding, fileno, isatty, buffer, ...: those of the real stream
        return getattr(self.original, name)


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to ``sys.stderr`` as it is when a record is
    emitted, formatted as Python's own last-resort handler does."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s:%(name)s:%(message)s"))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


#: the capture this executor installed (None in drivers, and until installed)
current: Capture | None = None


def install(client: redis.Redis, keys: Keys, node_id: str) -> Capture:
    """Called once by an executor at start."""
    global current
    current = Capture(client, keys, node_id)
    current.install()
    return current


def task_started(job_id: str, name: str, task_id: str, actor_id: str = "") -> None:
    if current is not None:
        current.task_started(job_id, name, task_id, actor_id)


def task_ended() -> None:
    if current is not None:
        current.task_ended()


def flush() -> None:
    """Send what is collected now (before the executor reports a task done,
    so the driver sees a task's output before its result)."""
    if current is not None:
        current.flush_partial()
        current._send()
