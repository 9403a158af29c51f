"""The fault-injection proxy itself, against the real session server: it forwards
faithfully, and each fault does exactly what it says on the wire."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import wait_for
from faultproxy import FaultProxy
from redis.backoff import NoBackoff
from redis.retry import Retry

from redray.settings import Settings


@pytest.fixture
def proxy(settings: Settings) -> Iterator[FaultProxy]:
    with FaultProxy(settings.host, settings.port) as p:
        yield p
    assert not p.errors


@pytest.fixture
def direct(settings: Settings) -> Iterator[redis.Redis]:
    """A client straight to the server, past the proxy."""
    client = redis.Redis(host=settings.host, port=settings.port, protocol=2)
    yield client
    client.close()


def through(proxy: FaultProxy, **kwargs: Any) -> redis.Redis:
    """A client through the proxy that never retries, so every fault surfaces."""
    options: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5}
    options.update(kwargs)
    return redis.Redis(
        host="127.0.0.1", port=proxy.port, protocol=2, retry=Retry(NoBackoff(), 0), **options
    )


def test_proxy_address_is_a_free_loopback_port(proxy: FaultProxy) -> None:
    assert proxy.port not in (0, 6379)
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    assert proxy.url() == f"redis://127.0.0.1:{proxy.port}/0"
    assert Settings.from_url(proxy.url(prefix="t1")).prefix == "t1"


def test_forwards_get_set_and_a_pipeline_of_1000_commands(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    client = through(proxy)
    assert client.set("k", "v")
    assert client.get("k") == b"v"
    assert direct.get("k") == b"v"
    pipe = client.pipeline(transaction=False)
    for i in range(1000):
        pipe.set(f"p:{i}", i)
        pipe.incr("p:count")
    replies = pipe.execute()
    assert replies[1::2] == list(range(1, 1001))
    assert direct.get("p:999") == b"999"
    big = b"x" * (8 * 1024 * 1024)  # bigger than the proxy's buffers: flow control
    client.set("big", big)
    assert client.get("big") == big
    client.close()
    stats = proxy.stats
    assert stats.accepted == 1 and stats.resets == 0 and stats.replies_dropped == 0


def test_forwards_many_concurrent_connections(proxy: FaultProxy, direct: redis.Redis) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        client = through(proxy)
        try:
            for _ in range(50):
                client.incr("shared")
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert direct.get("shared") == b"2000"
    assert proxy.stats.accepted == 40


def test_reset_all_breaks_an_in_flight_blpop_and_new_connections_work(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    client = through(proxy, socket_timeout=None)
    outcome: list[BaseException | object] = []

    def block() -> None:
        try:
            outcome.append(client.blpop(["never"], timeout=10))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=block)
    thread.start()
    wait_for(lambda: direct.info("clients")["blocked_clients"] >= 1, 5, "BLPOP blocked")
    assert proxy.reset_all() == 1
    thread.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], redis.ConnectionError)
    assert proxy.stats.resets == 1
    wait_for(lambda: direct.info("clients")["blocked_clients"] == 0, 5, "server-side cleanup")
    fresh = through(proxy)
    assert fresh.ping()
    client.close()
    fresh.close()


def test_drop_next_reply_runs_incr_on_the_server_but_the_client_gets_connection_error(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    direct.set("n", 5)
    client = through(proxy)
    assert client.ping()  # the handshake is done: the next chunk is the INCR itself
    proxy.drop_next_reply(b"INCR")
    with pytest.raises(redis.ConnectionError):
        client.incr("n")
    assert direct.get("n") == b"6"
    assert proxy.stats.replies_dropped == 1 and proxy.pending_drops == 0
    assert client.incr("n") == 7  # only the next one: the rule is spent
    client.close()


def test_drop_next_reply_loses_a_popped_item(proxy: FaultProxy, direct: redis.Redis) -> None:
    direct.rpush("q", "first", "second")
    client = through(proxy)
    proxy.drop_next_reply(b"LPOP")
    with pytest.raises(redis.ConnectionError):
        client.lpop("q")
    assert direct.lrange("q", 0, -1) == [b"second"]
    client.close()


def test_drop_next_reply_waits_for_a_blocked_pop_to_be_served(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    client = through(proxy)
    proxy.drop_next_reply(b"BLPOP")
    pusher = threading.Timer(0.3, lambda: direct.rpush("bq", "item"))
    pusher.start()
    with pytest.raises(redis.ConnectionError):
        client.blpop(["bq"], timeout=5)
    pusher.join()
    assert direct.llen("bq") == 0  # popped by the server, never delivered
    assert proxy.stats.replies_dropped == 1
    client.close()


def test_drop_next_reply_leaves_a_read_stream_entry_pending(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    direct.xgroup_create("s", "g", id="0", mkstream=True)
    direct.xadd("s", {"f": "v"})
    client = through(proxy)
    proxy.drop_next_reply(b"XREADGROUP")
    with pytest.raises(redis.ConnectionError):
        client.xreadgroup("g", "c1", {"s": ">"}, count=1, block=1000)
    assert direct.xpending("s", "g")["pending"] == 1
    client.close()


def test_drop_next_reply_on_a_pipeline_runs_every_command_in_it(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    sha = direct.script_load("return redis.call('INCR', KEYS[1])")
    client = through(proxy)
    assert client.ping()
    proxy.drop_next_reply(b"EVALSHA")
    pipe = client.pipeline(transaction=False)
    for _ in range(500):
        pipe.evalsha(sha, 1, "ran")
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    assert direct.get("ran") == b"500"
    client.close()


def test_drop_replies_randomly_drops_some_and_turns_off(
    proxy: FaultProxy, direct: redis.Redis
) -> None:
    proxy.drop_replies_randomly(0.5, match=b"drop-me", seed=7)
    dropped = 0
    for i in range(20):
        client = through(proxy)
        try:
            client.set(f"drop-me:{i}", i)
        except redis.ConnectionError:
            dropped += 1
        client.close()
    assert 0 < dropped < 20
    assert proxy.stats.replies_dropped == dropped
    assert len(direct.keys("drop-me:*")) == 20  # every SET ran
    proxy.drop_replies_randomly(0)
    client = through(proxy)
    for i in range(20):
        client.set(f"drop-me:{i}", i)
    assert proxy.stats.replies_dropped == dropped
    client.close()


def test_blackhole_times_out_a_get_and_heal_lets_new_connections_work(
    proxy: FaultProxy,
) -> None:
    before = through(proxy, socket_timeout=1)
    assert before.ping()
    proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        before.get("k")
    assert time.monotonic() - started < 10
    during = through(proxy, socket_timeout=1, socket_connect_timeout=1)
    with pytest.raises(redis.TimeoutError):
        during.get("k")  # accepted, then nothing answers
    assert proxy.stats.resets == 0
    proxy.heal()
    after = through(proxy, socket_timeout=1)
    assert after.set("k", "v") and after.get("k") == b"v"
    for client in (before, during, after):
        client.close()


def test_heal_reset_existing_false_delivers_held_bytes(proxy: FaultProxy) -> None:
    proxy.blackhole()
    held = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.3)
    held.sendall(b"PING\r\n")
    with pytest.raises(socket.timeout):
        held.recv(100)
    proxy.heal(reset_existing=False)
    held.settimeout(5)
    assert held.recv(100) == b"+PONG\r\n"
    held.close()


def test_heal_resets_connections_that_were_blackholed(proxy: FaultProxy) -> None:
    proxy.blackhole()
    held = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    held.sendall(b"PING\r\n")
    wait_for(lambda: proxy.stats.active == 1, 5, "connection accepted")
    assert proxy.heal() == 1
    with pytest.raises(ConnectionResetError):
        held.recv(100)
    held.close()


def test_pause_new_connections_holds_them_until_resumed(proxy: FaultProxy) -> None:
    existing = through(proxy)
    assert existing.ping()
    proxy.pause_new_connections()
    waiting = through(proxy, socket_timeout=0.5, socket_connect_timeout=0.5)
    with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
        waiting.ping()
    assert existing.ping()  # accepted connections are not affected
    proxy.resume_new_connections()
    assert through(proxy).ping()
    existing.close()
    waiting.close()


def test_reset_randomly_resets_connections_while_a_retrying_client_completes(
    proxy: FaultProxy, settings: Settings, direct: redis.Redis
) -> None:
    client = settings.replace(port=proxy.port).client()
    proxy.reset_randomly(40, seed=3)
    deadline = time.monotonic() + 10
    i = 0
    while i < 500 or proxy.stats.resets < 3:
        assert time.monotonic() < deadline, "chaos did not reset enough connections"
        client.set(f"c:{i}", i)
        i += 1
    proxy.stop_chaos()
    assert proxy.stats.resets >= 3
    assert direct.mget([f"c:{j}" for j in range(i)]) == [str(j).encode() for j in range(i)]
    client.close()


def proxy_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("faultproxy")]


def test_stop_leaves_no_listener_and_no_threads(settings: Settings) -> None:
    proxy = FaultProxy(settings.host, settings.port).start()
    client = through(proxy)
    assert client.ping()
    proxy.reset_randomly(0.01)
    assert proxy_threads()
    proxy.stop()
    assert not proxy_threads()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
    with pytest.raises(redis.ConnectionError):
        client.ping()
    client.close()


def test_a_stopped_proxy_starts_again_on_the_same_port(settings: Settings) -> None:
    proxy = FaultProxy(settings.host, settings.port)
    port = proxy.port
    with proxy:
        assert through(proxy).ping()
    with pytest.raises(redis.ConnectionError):
        through(proxy).ping()  # down: connections are refused
    with proxy:
        assert proxy.port == port
        assert through(proxy).ping()
    assert not proxy_threads()
