"""``rediss://`` end to end: a driver and a worker node (its executors and an
actor) on a TLS-only server, large objects included (they travel on redray's
own socket, not redis-py's)."""

from __future__ import annotations

import os

import pytest
from conftest import start_node

import redray

BIG = 6 * 1024 * 1024  # above the inline limit: the bulk channel carries it


@redray.remote
def add(a: int, b: int) -> int:
    return a + b


@redray.remote
def make_big(n: int) -> bytes:
    return os.urandom(8) * (n // 8)


@redray.remote
def length(data: bytes) -> int:
    return len(data)


@redray.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def incr(self) -> int:
        self.n += 1
        return self.n


@pytest.fixture
def tls_cluster(tls_server):
    settings = tls_server.settings
    client = settings.client()
    client.flushall()
    client.close()
    node = start_node(settings, num_cpus=2)
    try:
        redray.init(address=settings.to_url())
        yield settings
    finally:
        redray.shutdown()
        node.stop()


def test_tasks_run_over_tls(tls_cluster):
    assert redray.get([add.remote(i, 1) for i in range(8)]) == list(range(1, 9))


def test_an_actor_runs_over_tls(tls_cluster):
    counter = Counter.remote()
    assert redray.get([counter.incr.remote() for _ in range(5)]) == [1, 2, 3, 4, 5]


def test_large_objects_travel_over_tls_both_ways(tls_cluster):
    data = os.urandom(BIG)
    ref = redray.put(data)
    assert redray.get(length.remote(ref)) == BIG
    made = redray.get(make_big.remote(BIG))
    assert len(made) == BIG and made[:8] * (BIG // 8) == made


def test_a_server_certificate_the_client_cannot_verify_is_a_clear_error(tls_server):
    untrusted = tls_server.settings.replace(ssl_ca_certs=None)  # the system's CAs only
    with pytest.raises(ConnectionError, match="certificate verify failed"):
        redray.init(address=untrusted.to_url())
