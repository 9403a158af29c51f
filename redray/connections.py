"""Connections to the cluster's Redis, and the one retry policy redray uses.

redis-py's defaults are wrong for redray in two ways: its automatic retry
re-sends *any* command after a connection error, which repeats a
non-idempotent write or loses the item a destructive read (a pop) already
took; and a blocking read with no socket timeout hangs for ever when the
network black-holes. So:

* ``client()`` retries, for at most the outage budget; it is only used for
  commands that are safe to apply twice (reads, ``SET``/``HSET``/``SADD``/
  ``DEL``, and the scripts documented as idempotent);
* ``single_shot()`` never retries: pops, ``INCR``, list pushes of user data;
* ``blocking_call()`` runs one blocking command with a socket timeout of its
  server-side block plus ``BLOCK_MARGIN``, without retries;
* ``Batch`` sends many commands in one round trip, without retries; callers
  whose batch is idempotent wrap it in ``retrying()``;
* a ``Lane`` keeps one of a client's connections for the hot loops, so that
  ``Batch`` and ``blocking_call`` on it skip the pool.
"""

from __future__ import annotations

import functools
import os
import random
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry

from .exceptions import RaySystemError

try:
    import hiredis
except ImportError:  # redis-py packs then
    hiredis = None  # type: ignore[assignment]

T = TypeVar("T")


class Settings(Protocol):
    """Where the server is and the timeouts to use (``redray.settings.Settings``)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def db(self) -> int: ...
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> str | None: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def socket_timeout(self) -> float: ...
    @property
    def outage_budget(self) -> float: ...
    @property
    def display(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ssl_ca_certs(self) -> str | None: ...
    @property
    def ssl_certfile(self) -> str | None: ...
    @property
    def ssl_keyfile(self) -> str | None: ...
    @property
    def ssl_cert_reqs(self) -> str: ...


#: A blocking read's socket times out this long after its server-side block.
BLOCK_MARGIN = 0.5
#: Longest server-side block redray asks for; waits are re-issued in slices.
BLOCK_SLICE = 5.0
#: Largest batch (bytes) copied into one buffer to go out in one send.
_JOIN_LIMIT = 1 << 16
#: Errors after which a command may or may not have run on the server.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError)


class BudgetRetry(Retry):
    """redis-py's retry counts attempts; this one stops after ``budget``
    seconds, however long each attempt took (a refused connection fails at
    once, a black-holed one only after its timeout)."""

    def __init__(self, budget: float) -> None:
        super().__init__(ExponentialBackoff(cap=1.0, base=0.05), -1, TRANSIENT)
        self.budget = budget

    def call_with_retry(
        self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        deadline = time.monotonic() + self.budget
        failures = 0
        while True:
            try:
                return do()
            except TRANSIENT as error:
                failures += 1
                if kwargs.get("with_failure_count"):
                    fail(error, failures)
                else:
                    fail(error)
                pause = min(0.05 * 2 ** (failures - 1), 1.0) * (0.5 + random.random() / 2)
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)


def _retry(settings: Settings) -> Retry:
    return BudgetRetry(settings.outage_budget)


def _tls_options(settings: Settings) -> dict[str, Any]:
    if not settings.tls:
        return {}
    return {
        "ssl": True,
        "ssl_ca_certs": settings.ssl_ca_certs,
        "ssl_certfile": settings.ssl_certfile,
        "ssl_keyfile": settings.ssl_keyfile,
        "ssl_cert_reqs": settings.ssl_cert_reqs,
        "ssl_check_hostname": settings.ssl_cert_reqs == "required",
    }


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of a ``rediss://`` address, for sockets redray opens
    itself (the large-object channel), matching what redis-py does."""
    ctx = ssl.create_default_context(cafile=settings.ssl_ca_certs)
    ctx.check_hostname = settings.ssl_cert_reqs == "required"
    ctx.verify_mode = {
        "required": ssl.CERT_REQUIRED,
        "optional": ssl.CERT_OPTIONAL,
        "none": ssl.CERT_NONE,
    }[settings.ssl_cert_reqs]
    if settings.ssl_certfile:
        ctx.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    return ctx


def _connect(settings: Settings, retry: Retry, socket_timeout: float | None) -> redis.Redis:
    return redis.Redis(
        host=settings.host,
        port=settings.port,
        db=settings.db,
        username=settings.username,
        password=settings.password,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        retry=retry,
        retry_on_error=list(TRANSIENT),
        health_check_interval=0,
        # RESP2 on every redis-py version: raw replies read by Batch have one
        # shape (redis-py 8 defaults to RESP3, older ones to RESP2)
        protocol=2,
        **_driver_info(),
        **_tls_options(settings),
    )


@functools.cache
def _driver_info() -> dict[str, Any]:
    """The client name and version redis-py sends in CLIENT SETINFO, made
    once: left to itself it reads them from the package metadata for every
    client (a scan of sys.path, ~1 ms each)."""
    try:
        from redis.driver_info import DriverInfo  # newer redis-py
    except ImportError:
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


def client(settings: Settings) -> redis.Redis:
    """For idempotent commands: re-sent after a connection error, within the
    outage budget."""
    return _connect(settings, _retry(settings), settings.socket_timeout)


def single_shot(settings: Settings) -> redis.Redis:
    """For commands that must not be re-sent blindly (pops, INCR, pushes of
    user data) and for blocking calls: no retries at all."""
    return _connect(settings, Retry(NoBackoff(), 0), settings.socket_timeout)


#: forks of this process's ancestors and itself: a lane made before the last
#: fork holds its parent's connection (os.getpid() is a system call per use)
_forks = 0


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


class Lane:
    """A connection of ``client``'s pool kept between calls by whichever
    thread finds it free.

    The hot loops (an executor's claim, publish and BLPOP; a driver's
    synchronous ``get``) make a call every few hundred microseconds, and
    taking a connection from redis-py's pool and giving it back costs
    10-20 µs of each (pid checks, event dispatch, metrics). A thread that
    finds the lane's connection in use (another thread's blocking read)
    takes one from the pool as before: a lane never makes a thread wait.
    """

    def __init__(self, client: redis.Redis, *, keep: bool = True) -> None:
        self.client = client
        #: False: every call takes from the pool (a plain client given as a source)
        self.keep = keep
        self._lock = threading.Lock()
        self._conn: Any = None
        self._forks = _forks

    def take(self) -> Any:
        pool = self.client.connection_pool
        if not (self.keep and self._lock.acquire(blocking=False)):
            return pool.get_connection()
        try:
            if self._forks != _forks:
                # a forked child: the parent's socket is not this process's
                self._conn, self._forks = None, _forks
            if self._conn is None:
                self._conn = pool.get_connection()
        except BaseException:
            self._lock.release()
            raise
        return self._conn

    def give(self, conn: Any) -> None:
        if conn is not None and conn is self._conn:
            self._lock.release()
        else:
            self.client.connection_pool.release(conn)

    def close(self) -> None:
        """Hand the kept connection back to the pool, unless a call holds it
        (the client's close then closes it either way)."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._conn is not None and self._forks == _forks:
                self.client.connection_pool.release(self._conn)
            self._conn = None
        finally:
            self._lock.release()


def _lane(source: redis.Redis | Lane) -> Lane:
    return source if isinstance(source, Lane) else Lane(source, keep=False)


def blocking_call(source: redis.Redis | Lane, block: float, *args: Any) -> Any:
    """Run one blocking command (BLPOP, XREAD BLOCK, ...) whose server-side
    block is ``block`` seconds; its socket times out ``BLOCK_MARGIN`` later.

    Returns the raw reply. Raises ``redis.TimeoutError`` when nothing came
    back in time (the connection is then closed: its reply may still come)
    and ``redis.ConnectionError`` when the connection failed; neither is
    retried here, since the server may have popped something already.
    """
    lane = _lane(source)
    conn = lane.take()
    try:
        conn.send_command(*args, check_health=False)
        return conn.read_response(timeout=block + BLOCK_MARGIN)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        lane.give(conn)


def retrying(settings: Settings, fn: Callable[[], T], *, budget: float | None = None) -> T:
    """Call ``fn`` (which must be idempotent) until it succeeds, for at most
    ``budget`` seconds (the settings' outage budget by default)."""
    deadline = time.monotonic() + (settings.outage_budget if budget is None else budget)
    delay = 0.05
    while True:
        try:
            return fn()
        except TRANSIENT:
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)


class Batch:
    """Script calls (and plain commands) sent in one round trip, no retries.

    It writes the commands straight to one pooled connection and reads the
    raw replies: redis-py's ``Pipeline`` adds a ``SCRIPT EXISTS`` round trip
    whenever it holds a script and about 40 µs of bookkeeping per execution,
    which is the hot path's whole budget. Calls the server answers with
    NOSCRIPT (after a SCRIPT FLUSH or a restart; the server did not run them)
    are run again once the scripts are loaded again. Replies are raw (lists,
    not dicts or tuples).
    """

    def __init__(self, source: redis.Redis | Lane) -> None:
        self.lane = _lane(source)
        self._commands: list[tuple[Any, ...]] = []
        self._calls: list[tuple[Script, list[str], list[Any]] | None] = []

    def evalsha(self, script: Script, keys: list[str], args: list[Any]) -> None:
        self._commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        self._calls.append((script, keys, args))

    def command(self, *args: Any) -> None:
        self._commands.append(args)
        self._calls.append(None)

    def __len__(self) -> int:
        return len(self._calls)

    def execute(self, timeout: float | None = None) -> list[Any]:
        """Send everything and read every reply; ``timeout`` bounds each read
        (seconds; the client's socket timeout by default)."""
        if not self._commands:
            return []
        return self.send().collect(timeout)

    def send(self) -> Sent:
        """Send everything now and read the replies later (``Sent.collect``),
        so that the caller works while the server does; the connection stays
        taken until then."""
        commands, self._commands = self._commands, []
        calls, self._calls = self._calls, []
        lane = self.lane
        conn = lane.take()
        try:
            if commands:
                conn.send_packed_command(_pack(conn, commands), check_health=False)
        except BaseException:
            conn.disconnect()
            lane.give(conn)
            raise
        return Sent(lane, conn, calls)


class Sent:
    """A batch sent and not answered yet: its replies wait on its connection."""

    def __init__(self, lane: Lane, conn: Any, calls: list[Any]) -> None:
        self._lane = lane
        self._conn: Any = conn
        self._calls = calls

    def collect(self, timeout: float | None = None) -> list[Any]:
        """Read every reply (once); ``timeout`` as in ``Batch.execute``."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("a sent batch's replies were already collected")
        calls = self._calls
        replies: list[Any] = []
        try:
            sock = getattr(conn, "_sock", None)
            if timeout is not None and sock is not None:
                # once for the whole batch (per read it costs two syscalls each)
                sock.settimeout(max(timeout, 0.01))
            for _ in calls:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as err:
                    replies.append(err)
            if timeout is not None and sock is not None:
                sock.settimeout(conn.socket_timeout)
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._lane.give(conn)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                call = calls[i]
                assert call is not None
                script, keys, args = call
                replies[i] = script(keys=keys, args=args)  # loads the script, then runs it
            elif isinstance(reply, redis.ResponseError):
                raise RaySystemError(f"Redis refused a batched call: {reply}") from reply
        return replies


def _pack(conn: Any, commands: list[tuple[Any, ...]]) -> Any:
    """The commands in RESP: hiredis packs each in C, where redis-py's packer
    walks every argument in Python first. Small ones go in one buffer (one
    send), large ones as they are (no second copy)."""
    if hiredis is None:
        return conn.pack_commands(commands)
    pack = hiredis.pack_command
    try:
        packed = [pack(c) for c in commands]
    except TypeError:  # an argument hiredis cannot pack: redis-py says which
        return conn.pack_commands(commands)
    if len(packed) > 1 and sum(map(len, packed)) <= _JOIN_LIMIT:
        return [b"".join(packed)]
    return packed


def connection_error(settings: Settings, exc: BaseException) -> ConnectionError:
    """The error user code sees when Redis stayed unreachable past the budget."""
    return ConnectionError(
        f"Could not reach the redray Redis server at {settings.display}: {exc}. "
        "Check that it is running (`redray start --head`) and that the address is right."
    )
