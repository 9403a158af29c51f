"""A TCP fault-injection proxy for tests: it stands between redray processes
(driver, node agent, executors) and the Redis server, forwards bytes as they
come, and injects network faults on demand from the test thread.

    with FaultProxy(server.host, server.port) as proxy:
        settings = Settings.from_url(proxy.url())   # or settings.replace(port=proxy.port)
        ...
        proxy.reset_all()                  # RST every live connection
        proxy.drop_next_reply(b"EVALSHA")  # the server runs it, the client never hears
        proxy.blackhole(); proxy.heal()    # silence, then normal service again

One background thread runs a ``selectors`` loop over non-blocking sockets; every
fault method may be called from any thread at any moment: it is handed to that
loop and returns once the loop has applied it. Only the standard library is used,
so the module also works inside worker processes started with ``tests/`` on their
``PYTHONPATH``.

What each fault does on the wire:

* a *reset* sets ``SO_LINGER (1, 0)`` and closes, so the peer gets a TCP RST
  (``ECONNRESET``), on both sides of the proxied connection;
* a *dropped reply* forwards the client's chunk to the server, reads and discards
  what the server answers (until it has been quiet for ``reply_settle_s`` after
  its first reply bytes, or ``reply_wait_s`` passed without any), then resets both
  sides: the command ran, the reply was lost, the connection broke;
* a *blackhole* stops reading and writing on every socket, current and new, while
  keeping them all open: no byte is forwarded, nothing is answered, no FIN or RST
  is sent (the kernel still acknowledges TCP segments, so the peers see silence,
  not a dead network: their own timeouts must fire).
"""

from __future__ import annotations

import dataclasses
import errno
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlencode

__all__ = ["FaultProxy", "ProxyStats"]

_RECV_SIZE = 256 * 1024
#: stop reading a side while this much is waiting to be written to the other one
_HIGH_WATER = 4 * 1024 * 1024
_LINGER_RST = struct.pack("ii", 1, 0)
_THREAD_PREFIX = "faultproxy"

T = TypeVar("T")


@dataclass
class ProxyStats:
    """Counters since the proxy was made (``FaultProxy.stats`` gives a snapshot)."""

    #: client connections accepted
    accepted: int = 0
    #: client connections open now
    active: int = 0
    #: connections the proxy reset on purpose (reset_all, chaos, dropped replies, heal)
    resets: int = 0
    #: replies swallowed by drop_next_reply / drop_replies_randomly (each also a reset)
    replies_dropped: int = 0
    #: client connections reset because the upstream server could not be reached
    upstream_failures: int = 0
    #: bytes forwarded client -> server and server -> client
    bytes_up: int = 0
    bytes_down: int = 0
    #: server bytes read and discarded while swallowing a reply
    bytes_swallowed: int = 0


@dataclass
class _DropRule:
    match: bytes | None
    remaining: int


@dataclass
class _RandomDrop:
    match: bytes | None
    probability: float
    rng: random.Random


class _Conn:
    """One proxied connection: the accepted client socket and its upstream socket."""

    __slots__ = (
        "cid",
        "client",
        "upstream",
        "connecting",
        "to_up",
        "to_client",
        "client_mask",
        "up_mask",
        "blackholed",
        "client_eof",
        "up_eof",
        "swallow_deadline",
        "swallow_last",
        "tail",
        "closed",
    )

    def __init__(self, cid: int, client: socket.socket) -> None:
        self.cid = cid
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.to_up = bytearray()
        self.to_client = bytearray()
        self.client_mask = 0
        self.up_mask = 0
        self.blackholed = False
        self.client_eof = False
        self.up_eof = False
        #: set while a reply is being swallowed: when to give up waiting for it
        self.swallow_deadline: float | None = None
        #: when the last swallowed server bytes arrived
        self.swallow_last: float | None = None
        #: the last client bytes, so a match split across two chunks is still seen
        self.tail = b""
        self.closed = False


def _rst(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream_host:upstream_port``, with faults.

    The listening socket is bound when the proxy is made (``port`` is known at
    once, on a free port, never 6379 unless asked for); ``start()`` begins
    serving, ``stop()`` resets every connection, closes the listener and ends the
    proxy's threads. A stopped proxy can be started again on the same port.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        port: int = 0,
        reply_wait_s: float = 2.0,
        reply_settle_s: float = 0.05,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        #: how long a dropped reply is waited for before both sides are reset anyway
        self.reply_wait_s = reply_wait_s
        #: how long the server must stay quiet after its first reply bytes
        self.reply_settle_s = reply_settle_s
        info = socket.getaddrinfo(upstream_host, upstream_port, type=socket.SOCK_STREAM)
        self._upstream_family = info[0][0]
        self._upstream_addr = info[0][4]
        self._listener: socket.socket | None = None
        self._port = port
        self._bind()

        self._lock = threading.Lock()  # guards _running and _calls
        self._running = False
        self._calls: list[tuple[Callable[[], Any], threading.Event, list[Any]]] = []
        self._thread: threading.Thread | None = None
        self._selector: selectors.BaseSelector | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._stopping = False

        # state below is owned by the loop thread (or by the caller while not running)
        self._conns: dict[int, _Conn] = {}
        self._next_cid = 0
        self._swallowing: set[_Conn] = set()
        self._stats = ProxyStats()
        self._blackholed = False
        self._paused = False
        self._listener_registered = False
        self._drop_rules: list[_DropRule] = []
        self._random_drop: _RandomDrop | None = None

        self._chaos_thread: threading.Thread | None = None
        self._chaos_stop = threading.Event()
        #: unexpected exceptions raised while handling a connection (it was reset)
        self.errors: list[BaseException] = []

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"127.0.0.1:{self._port}"

    def url(self, prefix: str | None = None, db: int = 0) -> str:
        """``redis://127.0.0.1:<port>/<db>``, with ``?prefix=`` when one is given."""
        url = f"redis://127.0.0.1:{self._port}/{db}"
        if prefix is not None:
            url += "?" + urlencode({"prefix": prefix})
        return url

    @property
    def stats(self) -> ProxyStats:
        """A snapshot of the counters."""
        return dataclasses.replace(self._stats, active=len(self._conns))

    @property
    def running(self) -> bool:
        return self._running

    # -- lifecycle ---------------------------------------------------------------------------

    def _bind(self) -> None:
        while True:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", self._port))
            except BaseException:
                sock.close()
                raise
            if self._port == 0 and sock.getsockname()[1] == 6379:
                sock.close()  # never take the default Redis port by chance
                continue
            break
        sock.listen(1024)
        sock.setblocking(False)
        self._port = sock.getsockname()[1]
        self._listener = sock

    def start(self) -> FaultProxy:
        """Start serving in a background thread (no-op when already running)."""
        with self._lock:
            if self._running:
                return self
            if self._listener is None:
                self._bind()
            self._selector = selectors.DefaultSelector()
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
            self._listener_registered = False
            self._stopping = False
            self._running = True
            self._thread = threading.Thread(
                target=self._loop, name=f"{_THREAD_PREFIX}-{self._port}", daemon=True
            )
        self._sync_listener()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop chaos, reset every connection, close the listener, end the threads."""
        self.stop_chaos()
        thread = self._thread
        if thread is not None and self._running:

            def halt() -> None:
                self._stopping = True

            self._call(halt)
            thread.join(10)
        self._thread = None
        # anything left (never started, or the loop already gone)
        for conn in list(self._conns.values()):
            self._close(conn, abort=True)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        listener = getattr(self, "_listener", None)
        if listener is not None and not getattr(self, "_running", False):
            listener.close()

    # -- faults ------------------------------------------------------------------------------

    def reset_all(self) -> int:
        """Reset (RST) every current connection at once; return how many.

        New connections are accepted and served as usual afterwards.
        """

        def do() -> int:
            conns = list(self._conns.values())
            for conn in conns:
                self._stats.resets += 1
                self._close(conn, abort=True)
            return len(conns)

        return self._call(do)

    def reset_one(self, which: float = 0.0) -> bool:
        """Reset one live connection, ``which`` in [0, 1) picking it by position
        in accept order; False when there was none."""

        def do() -> bool:
            if not self._conns:
                return False
            conns = list(self._conns.values())
            conn = conns[min(int(which * len(conns)), len(conns) - 1)]
            self._stats.resets += 1
            self._close(conn, abort=True)
            return True

        return self._call(do)

    def reset_randomly(
        self, rate_per_s: float, duration_s: float | None = None, seed: int | None = None
    ) -> None:
        """Start a chaos thread resetting a random live connection at random
        moments (exponential gaps, ``rate_per_s`` on average), for ``duration_s``
        seconds or until ``stop_chaos()``. Replaces any chaos already running."""
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.stop_chaos()
        rng = random.Random(seed)
        stop = threading.Event()
        deadline = None if duration_s is None else time.monotonic() + duration_s

        def chaos() -> None:
            while True:
                gap = rng.expovariate(rate_per_s)
                if deadline is not None:
                    gap = min(gap, max(0.0, deadline - time.monotonic()))
                if stop.wait(gap):
                    return
                if deadline is not None and time.monotonic() >= deadline:
                    return
                if not self._running:
                    return
                self.reset_one(rng.random())

        self._chaos_stop = stop
        self._chaos_thread = threading.Thread(
            target=chaos, name=f"{_THREAD_PREFIX}-chaos-{self._port}", daemon=True
        )
        self._chaos_thread.start()

    def stop_chaos(self) -> None:
        """End the ``reset_randomly`` thread, if any, and wait for it."""
        self._chaos_stop.set()
        thread = self._chaos_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self._chaos_thread = None

    def drop_next_reply(self, match: bytes | None = None, count: int = 1) -> None:
        """The next ``count`` client chunks containing ``match`` (any chunk when
        None; case-sensitive bytes, so pass ``b"EVALSHA"``, a key or a value) reach
        the server, but its answer is swallowed and both sides of that connection
        are reset. Chunks are what one ``recv`` got: a whole pipeline usually."""
        if count < 1:
            raise ValueError("count must be at least 1")

        def do() -> None:
            self._drop_rules.append(_DropRule(match, count))

        self._call(do)

    def drop_replies_randomly(
        self, probability: float, match: bytes | None = None, seed: int | None = None
    ) -> None:
        """Drop the reply (as ``drop_next_reply``) to each client chunk containing
        ``match`` with ``probability``; 0 turns it off. Replaces the previous setting."""
        if not 0 <= probability <= 1:
            raise ValueError("probability must be in [0, 1]")
        rule = _RandomDrop(match, probability, random.Random(seed)) if probability else None

        def do() -> None:
            self._random_drop = rule

        self._call(do)

    def stop_dropping(self) -> None:
        """Forget every pending ``drop_next_reply`` and the random drop setting
        (a reply being swallowed right now is still dropped)."""

        def do() -> None:
            self._drop_rules.clear()
            self._random_drop = None

        self._call(do)

    @property
    def pending_drops(self) -> int:
        """How many ``drop_next_reply`` drops have not happened yet."""
        return sum(rule.remaining for rule in list(self._drop_rules))

    def blackhole(self) -> None:
        """Stop forwarding in both directions on every current and new connection,
        keeping every socket open: nothing is read, written, answered or closed.
        New connections are still accepted (and held, not connected upstream).
        Since nothing is read, a client that gives up and closes its socket is
        only noticed on ``heal()`` (or ``stop()``)."""

        def do() -> None:
            self._blackholed = True
            for conn in self._conns.values():
                conn.blackholed = True
                self._update(conn)

        self._call(do)

    def silence_current(self) -> int:
        """Black-hole every connection open now, for good, while new ones are
        served normally: a middlebox that forgot its flows without telling
        either side. Only a client's own timeout gets it off a silenced
        connection. Returns how many were silenced."""

        def do() -> int:
            for conn in self._conns.values():
                conn.blackholed = True
                self._update(conn)
            return len(self._conns)

        return self._call(do)

    def heal(self, reset_existing: bool = True) -> int:
        """End a blackhole: new connections are forwarded normally again.

        With ``reset_existing`` (the default) every connection that was blackholed
        is reset (RST), like a firewall that lost its state: clients reconnect.
        With ``reset_existing=False`` they resume as if the partition had healed:
        the bytes held in both directions flow on, connections accepted during the
        blackhole connect upstream now. Returns how many connections were reset.
        """

        def do() -> int:
            self._blackholed = False
            reset = 0
            for conn in list(self._conns.values()):
                if not conn.blackholed:
                    continue
                if reset_existing:
                    self._stats.resets += 1
                    reset += 1
                    self._close(conn, abort=True)
                    continue
                conn.blackholed = False
                if conn.upstream is None:
                    self._connect_upstream(conn)
                    if conn.closed:
                        continue
                self._flush(conn, to_up=True)
                self._flush(conn, to_up=False)
                self._after_io(conn)
            return reset

        return self._call(do)

    @property
    def blackholed(self) -> bool:
        return self._blackholed

    def pause_new_connections(self) -> None:
        """Stop accepting: new clients wait in the listen backlog (their TCP
        connect succeeds, nothing answers) until ``resume_new_connections()``.
        Connections already accepted are not affected."""

        def do() -> None:
            self._paused = True
            self._sync_listener()

        self._call(do)

    def resume_new_connections(self) -> None:
        """Accept again, serving the clients that queued up while paused."""

        def do() -> None:
            self._paused = False
            self._sync_listener()

        self._call(do)

    # -- the loop ----------------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result (directly when the
        loop is not running, or when called from the loop thread itself)."""
        done = threading.Event()
        box: list[Any] = []
        with self._lock:
            if not self._running or threading.current_thread() is self._thread:
                return fn()
            self._calls.append((fn, done, box))
        self._wake()
        if not done.wait(10):
            raise RuntimeError("fault proxy loop did not answer")
        if isinstance(box[0], BaseException):
            raise box[0]
        result: T = box[0]
        return result

    def _wake(self) -> None:
        wake = self._wake_w
        if wake is None:
            return
        try:
            wake.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, done, box in calls:
            try:
                box.append(fn())
            except BaseException as exc:  # handed back to the caller
                box.append(exc)
            done.set()

    def _sync_listener(self) -> None:
        selector = self._selector
        if selector is None or self._listener is None:
            return
        want = not self._paused and not self._stopping
        if want and not self._listener_registered:
            selector.register(self._listener, selectors.EVENT_READ, "listen")
            self._listener_registered = True
        elif not want and self._listener_registered:
            selector.unregister(self._listener)
            self._listener_registered = False

    def _loop(self) -> None:
        selector = self._selector
        assert selector is not None
        try:
            while not self._stopping:
                events = selector.select(self._timeout())
                for key, mask in events:
                    data = key.data
                    if data == "wake":
                        self._drain_wake()
                    elif data == "listen":
                        self._accept()
                    else:
                        conn, is_client = data
                        if conn.closed:
                            continue
                        try:
                            self._handle(conn, is_client, mask)
                        except Exception as exc:  # keep serving the others
                            self.errors.append(exc)
                            self._close(conn, abort=True)
                self._run_calls()
                if self._swallowing:
                    self._check_swallowing()
        finally:
            for conn in list(self._conns.values()):
                self._close(conn, abort=True)
            if self._listener_registered and self._listener is not None:
                selector.unregister(self._listener)
                self._listener_registered = False
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            with self._lock:
                self._running = False
            self._run_calls()  # answer whoever queued a call meanwhile
            selector.close()
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_r = self._wake_w = None
            self._selector = None

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _timeout(self) -> float | None:
        due = [self._swallow_due(conn) for conn in self._swallowing if not conn.blackholed]
        if not due:
            return None
        return max(0.0, min(due) - time.monotonic())

    def _swallow_due(self, conn: _Conn) -> float:
        """When to reset a connection whose reply is being swallowed: once the
        server has been quiet for ``reply_settle_s`` after answering (and the
        whole command reached it), or at the deadline."""
        assert conn.swallow_deadline is not None
        if conn.swallow_last is not None and not conn.to_up:
            return min(conn.swallow_deadline, conn.swallow_last + self.reply_settle_s)
        return conn.swallow_deadline

    def _check_swallowing(self) -> None:
        now = time.monotonic()
        for conn in list(self._swallowing):
            if conn.blackholed:
                continue  # no RST while blackholed; the timers resume on heal
            if now >= self._swallow_due(conn):
                self._finish_drop(conn)

    def _finish_drop(self, conn: _Conn) -> None:
        self._stats.replies_dropped += 1
        self._stats.resets += 1
        self._close(conn, abort=True)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(128):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. EMFILE; try again on the next event
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self._next_cid, sock)
            self._next_cid += 1
            self._conns[conn.cid] = conn
            self._stats.accepted += 1
            if self._blackholed:
                conn.blackholed = True
            else:
                self._connect_upstream(conn)
                if conn.closed:
                    continue
            self._update(conn)

    def _connect_upstream(self, conn: _Conn) -> None:
        sock = socket.socket(self._upstream_family, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(self._upstream_addr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            sock.close()
            self._stats.upstream_failures += 1
            self._close(conn, abort=True)
            return
        conn.upstream = sock
        conn.connecting = err != 0
        self._update(conn)

    def _handle(self, conn: _Conn, is_client: bool, mask: int) -> None:
        if is_client:
            if mask & selectors.EVENT_READ:
                self._read_client(conn)
            if not conn.closed and mask & selectors.EVENT_WRITE:
                self._flush(conn, to_up=False)
        else:
            if conn.connecting:
                if mask & selectors.EVENT_WRITE:
                    self._finish_connect(conn)
            else:
                if mask & selectors.EVENT_READ:
                    self._read_upstream(conn)
                if not conn.closed and mask & selectors.EVENT_WRITE:
                    self._flush(conn, to_up=True)
        if not conn.closed:
            self._after_io(conn)

    def _finish_connect(self, conn: _Conn) -> None:
        assert conn.upstream is not None
        err = conn.upstream.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._stats.upstream_failures += 1
            self._close(conn, abort=True)
            return
        conn.connecting = False
        self._flush(conn, to_up=True)

    def _read_client(self, conn: _Conn) -> None:
        try:
            data = conn.client.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, abort=True)  # the client reset: pass it on
            return
        if not data:
            conn.client_eof = True
            return
        if conn.swallow_deadline is None and (self._drop_rules or self._random_drop):
            if self._should_drop(conn, data):
                conn.swallow_deadline = time.monotonic() + self.reply_wait_s
                conn.swallow_last = None
                self._swallowing.add(conn)
        self._stats.bytes_up += len(data)
        conn.to_up += data
        self._flush(conn, to_up=True)

    def _read_upstream(self, conn: _Conn) -> None:
        assert conn.upstream is not None
        try:
            data = conn.upstream.recv(_RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            if conn.swallow_deadline is not None:
                self._finish_drop(conn)
            else:
                self._close(conn, abort=True)  # the server reset: pass it on
            return
        if not data:
            conn.up_eof = True
            return
        if conn.swallow_deadline is not None:
            self._stats.bytes_swallowed += len(data)
            conn.swallow_last = time.monotonic()
            return
        self._stats.bytes_down += len(data)
        conn.to_client += data
        self._flush(conn, to_up=False)

    def _should_drop(self, conn: _Conn, data: bytes) -> bool:
        tail = conn.tail
        window = tail + data if tail else data
        longest = 0
        hit = False
        for rule in self._drop_rules:
            if self._matches(rule.match, window, len(tail)):
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._drop_rules.remove(rule)
                hit = True
                break
            longest = max(longest, len(rule.match or b""))
        if not hit and self._random_drop is not None:
            rd = self._random_drop
            longest = max(longest, len(rd.match or b""))
            if self._matches(rd.match, window, len(tail)) and rd.rng.random() < rd.probability:
                hit = True
        conn.tail = bytes(window[-(longest - 1) :]) if longest > 1 else b""
        return hit

    @staticmethod
    def _matches(match: bytes | None, window: bytes, tail_len: int) -> bool:
        if match is None:
            return True
        # only occurrences ending in the new bytes: one wholly in the tail was seen before
        return window.find(match, max(0, tail_len - len(match) + 1)) != -1

    def _flush(self, conn: _Conn, *, to_up: bool) -> None:
        if conn.blackholed or conn.closed:
            return
        if to_up:
            sock, buf = conn.upstream, conn.to_up
            if sock is None or conn.connecting:
                return
        else:
            sock, buf = conn.client, conn.to_client
        while buf:
            try:
                sent = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn, abort=True)
                return
            if not sent:
                return
            del buf[:sent]

    def _after_io(self, conn: _Conn) -> None:
        """Close a connection whose peer has gone once its bytes are flushed,
        and bring the selector's interest up to date."""
        if conn.closed:
            return
        if conn.swallow_deadline is not None and (conn.client_eof or conn.up_eof):
            if not conn.blackholed:
                self._finish_drop(conn)
                return
        if conn.client_eof and (not conn.to_up or conn.upstream is None):
            self._close(conn, abort=False)
            return
        if conn.up_eof and not conn.to_client:
            self._close(conn, abort=False)
            return
        self._update(conn)

    def _update(self, conn: _Conn) -> None:
        selector = self._selector
        if conn.closed or selector is None:
            return
        live = not conn.blackholed
        cmask = 0
        if live and not conn.client_eof and len(conn.to_up) < _HIGH_WATER:
            cmask |= selectors.EVENT_READ
        if live and conn.to_client:
            cmask |= selectors.EVENT_WRITE
        conn.client_mask = self._set_mask(
            selector, conn.client, conn.client_mask, cmask, conn, True
        )
        if conn.upstream is not None:
            umask = 0
            if conn.connecting:
                umask = selectors.EVENT_WRITE
            else:
                if live and not conn.up_eof and len(conn.to_client) < _HIGH_WATER:
                    umask |= selectors.EVENT_READ
                if live and conn.to_up:
                    umask |= selectors.EVENT_WRITE
            conn.up_mask = self._set_mask(selector, conn.upstream, conn.up_mask, umask, conn, False)

    @staticmethod
    def _set_mask(
        selector: selectors.BaseSelector,
        sock: socket.socket,
        old: int,
        new: int,
        conn: _Conn,
        is_client: bool,
    ) -> int:
        if old == new:
            return new
        if not old:
            selector.register(sock, new, (conn, is_client))
        elif not new:
            selector.unregister(sock)
        else:
            selector.modify(sock, new, (conn, is_client))
        return new

    def _close(self, conn: _Conn, *, abort: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        self._conns.pop(conn.cid, None)
        self._swallowing.discard(conn)
        selector = self._selector
        for sock, mask in ((conn.client, conn.client_mask), (conn.upstream, conn.up_mask)):
            if sock is None:
                continue
            if mask and selector is not None:
                try:
                    selector.unregister(sock)
                except (KeyError, ValueError):
                    pass
            if abort:
                _rst(sock)
            else:
                sock.close()
        conn.client_mask = conn.up_mask = 0
