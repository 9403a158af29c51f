"""Moving large objects to and from Redis without extra copies.

redis-py (with hiredis) copies a large argument into one packed command and
reassembles a large reply through a growing buffer: three or four copies of
a 100 MB array. This module speaks RESP directly on its own socket: a write
sends the header and then each memoryview as it is, and a read fills one
preallocated ``bytearray`` per value with ``readinto``, so the bytes are
copied once, by the kernel. Used only for object records above the inline
limit; everything else goes through redis-py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

import redis

from .buffers import allocate
from .connections import tls_context
from .settings import Settings

_CRLF = b"\r\n"
#: Values at least this large are read straight into their own buffer.
_DIRECT = 64 * 1024
#: A large value is sent in slices of this size, ``abort_if`` asked before each.
_SLICE = 8 * 1024 * 1024


class Aborted(Exception):
    """A write was given up half-way (``BulkChannel.abort_if``): the
    connection was closed, so the server ran none of the command."""


def _arg(value: Any) -> list[Any]:
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = str(value).encode()
    view = memoryview(value).cast("B")
    return [b"$%d\r\n" % view.nbytes, view, _CRLF]


class BulkChannel:
    """One raw RESP connection, used by one thread at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._sock: socket.socket | None = None
        self._rfile: Any = None
        self._lock = threading.Lock()
        #: asked between the slices of a large write: True gives the write up
        #: (an upload whose object was freed meanwhile: uploader.py)
        self.abort_if: Callable[[], bool] | None = None

    def check(self) -> None:
        """Raise Aborted if the write in hand is to be given up (``abort_if``);
        also asked between the slices of a large record's hashing."""
        if self.abort_if is not None and self.abort_if():
            raise Aborted

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._rfile.close()
                self._sock.close()
            finally:
                self._sock = None
                self._rfile = None

    def _connect(self) -> None:
        s = self.settings
        try:
            sock = socket.create_connection((s.host, s.port), timeout=s.connect_timeout)
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to {s.display}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # big socket buffers: fewer, larger reads and writes for big values
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, 8 * 1024 * 1024)
            except OSError:
                pass
        sock.settimeout(max(s.socket_timeout, 60.0))
        if s.tls:
            try:
                sock = tls_context(s).wrap_socket(sock, server_hostname=s.host)
            except (OSError, ValueError) as exc:
                sock.close()
                message = f"TLS handshake with {s.display} failed: {exc}"
                raise redis.ConnectionError(message) from exc
        self._sock = sock
        self._rfile = sock.makefile("rb", buffering=_DIRECT)
        if s.password is not None:
            self._call("AUTH", *([s.username] if s.username else []), s.password)
        if s.db:
            self._call("SELECT", s.db)

    def _send(self, *args: Any) -> None:
        assert self._sock is not None
        parts: list[Any] = [b"*%d\r\n" % len(args)]
        for a in args:
            parts.extend(_arg(a))
        small: list[bytes] = []
        for part in parts:
            if isinstance(part, bytes) or part.nbytes < _DIRECT:
                small.append(bytes(part))
                continue
            if small:
                self._sock.sendall(b"".join(small))
                small = []
            for start in range(0, part.nbytes, _SLICE):
                self.check()
                self._sock.sendall(part[start : start + _SLICE])
        if small:
            self._sock.sendall(b"".join(small))

    def _read(self) -> Any:
        line = self._rfile.readline()
        if not line.endswith(_CRLF):
            raise redis.ConnectionError("connection closed while reading a reply")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise redis.ResponseError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            if n >= _DIRECT:
                buf = allocate(n)
                view = memoryview(buf)
                got = 0
                while got < n:
                    k = self._rfile.readinto(view[got:])
                    if not k:
                        raise redis.ConnectionError("connection closed inside a value")
                    got += k
                self._rfile.read(2)
                return buf
            data = self._rfile.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise redis.ConnectionError(f"unexpected reply type {kind!r}")

    def _call(self, *args: Any) -> Any:
        self._send(*args)
        return self._read()

    def call(self, *args: Any) -> Any:
        """Run one command; reconnects once if the connection had gone away."""
        with self._lock:
            for attempt in (0, 1):
                if self._sock is None:
                    self._connect()
                try:
                    return self._call(*args)
                except Aborted:
                    self.close()  # the server drops the half-sent command
                    raise
                except (OSError, redis.ConnectionError):
                    self.close()
                    if attempt:
                        raise
            raise AssertionError("unreachable")

    def hset(self, key: str, fields: Mapping[str, Any]) -> Any:
        args: list[Any] = ["HSET", key]
        for name, value in fields.items():
            args.extend((name, value))
        return self.call(*args)

    def hgetall(self, key: str) -> dict[bytes, Any]:
        flat = self.call("HGETALL", key) or []
        return {bytes(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
