"""The driver's side of task output: read the job's log stream, print it.

Lines come from every node (workers/output.py writes them) and are printed
as Ray prints them: ``(f pid=1234) hello`` on stdout or stderr, as the task
wrote them, with ``, ip=10.0.0.2`` for a node on another machine. Repeats of
a line from other processes within ``DEDUP_WINDOW_S`` are held back and said
once at the end of the window, ``... [repeated 7x across cluster]``, as Ray
de-duplicates (``REDRAY_DEDUP_LOGS=0`` turns it off).

Printing runs on its own thread, never on a heartbeat's or a ``get``'s, and
stops at ``shutdown`` after a last read, so what a task printed before the
driver got its result is on the terminal when the driver exits.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import redis

from .connections import Lane, blocking_call
from .identity import node_ip

log = logging.getLogger(__name__)

#: how long a read blocks on the server (the thread checks for stop between)
BLOCK_S = 1.0
#: entries one read takes at most
READ_COUNT = 1000
#: the window in which repeats from other processes are held back (Ray's 5 s)
DEDUP_WINDOW_S = 5.0

_NUMBERS = re.compile(r"\d+")


@dataclass
class Line:
    """One line a task or actor printed."""

    kind: str  # "out" or "err"
    name: str
    pid: str
    ip: str
    text: str
    task_id: str = ""
    actor_id: str = ""
    node_id: str = ""

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> Line:
        return cls(
            kind=fields.get("k", "out"),
            name=fields.get("n", ""),
            pid=fields.get("p", ""),
            ip=fields.get("i", ""),
            text=fields.get("l", ""),
            task_id=fields.get("t", ""),
            actor_id=fields.get("a", ""),
            node_id=fields.get("o", ""),
        )

    def prefix(self, here: str) -> str:
        where = f"pid={self.pid}" if self.ip in ("", here) else f"pid={self.pid}, ip={self.ip}"
        return f"({self.name} {where})"


def decode_entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """``XREAD``/``XRANGE`` entries as (id, fields), text decoded."""
    out = []
    for entry_id, raw in reply or []:
        # a raw reply is a flat [field, value, ...]; redis-py's xrange a dict
        pairs = raw.items() if isinstance(raw, dict) else zip(raw[::2], raw[1::2])
        fields = {_text(k): _text(v) for k, v in pairs}
        out.append((_text(entry_id), fields))
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class _Seen:
    first: float
    pid: str
    repeats: int = 0
    last: Line | None = None


class Dedup:
    """Ray's de-duplication: a line that other processes repeat within the
    window is printed once, then once more with its count when the window
    ends. Numbers do not make lines differ (``step 3`` repeats ``step 4``);
    lines of only numbers are never held back."""

    def __init__(self, window: float = DEDUP_WINDOW_S) -> None:
        self.window = window
        self.seen: dict[tuple[str, str], _Seen] = {}

    def feed(self, line: Line, now: float) -> bool:
        """Whether to print ``line`` now."""
        key = (line.kind, _NUMBERS.sub("0", line.text).strip())
        if not _NUMBERS.sub("", line.text).strip():
            return True
        seen = self.seen.get(key)
        if seen is None or now - seen.first >= self.window:
            self.seen[key] = _Seen(now, line.pid)
            return True
        if line.pid == seen.pid:
            return True  # one process's own repeats are its output
        seen.repeats += 1
        seen.last = line
        return False

    def expired(self, now: float, everything: bool = False) -> list[tuple[Line, int]]:
        """The held-back lines whose window ended: (last one, count)."""
        out = []
        for key, seen in list(self.seen.items()):
            if everything or now - seen.first >= self.window:
                del self.seen[key]
                if seen.repeats and seen.last is not None:
                    out.append((seen.last, seen.repeats))
        return out


class LogPrinter:
    """Prints a job's task output in this driver, from a thread of its own."""

    def __init__(
        self,
        client: redis.Redis,
        key: str,
        dedup: bool = True,
        out: Callable[[], TextIO] = lambda: sys.stdout,
        err: Callable[[], TextIO] = lambda: sys.stderr,
    ) -> None:
        self.key = key
        self._lane = Lane(client)
        self._dedup = Dedup() if dedup else None
        self._out = out
        self._err = err
        self._here = node_ip()
        self._last = "0-0"
        self._stop = threading.Event()
        # the reading thread and stop()'s last read: each line is printed once
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="log-printer", daemon=True)
        self._told_dedup = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Print what is left (a last read), then stop. Never waits for the
        reading thread's block: what that read brings after this is dropped
        (this last read has it)."""
        with self._lock:
            self._stop.set()
            try:
                self._drain()
            except redis.RedisError:
                pass
            self._print_expired(everything=True)
        self._lane.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = blocking_call(self._lane, BLOCK_S, *self._command(BLOCK_S))
            except redis.TimeoutError:
                reply = None
            except redis.RedisError as exc:
                log.debug("reading task output: %s", exc)
                self._stop.wait(0.5)
                continue
            with self._lock:
                if self._stop.is_set():
                    return
                self._show_reply(reply)
                self._print_expired()

    def _command(self, block: float | None) -> list[Any]:
        args: list[Any] = ["XREAD", "COUNT", READ_COUNT]
        if block is not None:
            args += ["BLOCK", int(block * 1000)]
        return [*args, "STREAMS", self.key, self._last]

    def _drain(self) -> None:
        while self._show_reply(blocking_call(self._lane, 0.0, *self._command(None))) == READ_COUNT:
            pass

    def _show_reply(self, reply: Any) -> int:
        """Print an XREAD reply's lines; how many there were."""
        entries = decode_entries(reply[0][1]) if reply else []
        for entry_id, fields in entries:
            self._last = entry_id
            self._show(Line.from_fields(fields))
        return len(entries)

    def _show(self, line: Line) -> None:
        if self._dedup is not None and not self._dedup.feed(line, time.monotonic()):
            if not self._told_dedup:
                self._told_dedup = True
                self._write(
                    "err",
                    "(redray de-duplicates repeated lines across workers: set "
                    "REDRAY_DEDUP_LOGS=0 to see every line)",
                )
            return
        self._write(line.kind, f"{line.prefix(self._here)} {line.text}")

    def _print_expired(self, everything: bool = False) -> None:
        if self._dedup is None:
            return
        for line, count in self._dedup.expired(time.monotonic(), everything):
            self._write(
                line.kind,
                f"{line.prefix(self._here)} {line.text} [repeated {count}x across cluster]",
            )

    def _write(self, kind: str, text: str) -> None:
        stream = self._err() if kind == "err" else self._out()
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed terminal: nothing to show it on
            pass
