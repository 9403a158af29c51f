"""What one wake-up costs on this machine: the floor under every latency line.

    python benchmarks/round_trip.py

A synchronous task or actor call is a chain of processes waking each other:
for redray driver -> Redis -> executor -> Redis -> executor -> Redis ->
driver (six wake-ups; an actor call four), for Ray driver -> worker ->
driver plus its internal thread hand-offs. So the ratio of the two moves with
the machine's cost of a wake-up, which on a shared virtual machine changes
from day to day. This prints two figures to quote beside the ratios: a
round trip between two processes over a pipe, and a PING round trip to a
Redis-compatible server on loopback (started here on a free port).
"""

from __future__ import annotations

import os
import time


def pipe_round_trip_us(n: int = 20_000) -> float:
    """Microseconds for one byte to go to a child process and back."""
    to_child, from_parent = os.pipe()
    from_child, to_parent = os.pipe()
    pid = os.fork()
    if pid == 0:
        for _ in range(n + 1):
            os.read(to_child, 1)
            os.write(to_parent, b"x")
        os._exit(0)
    os.write(from_parent, b"x")  # warm-up
    os.read(from_child, 1)
    start = time.perf_counter()
    for _ in range(n):
        os.write(from_parent, b"x")
        os.read(from_child, 1)
    elapsed = time.perf_counter() - start
    os.waitpid(pid, 0)
    for fd in (to_child, from_parent, from_child, to_parent):
        os.close(fd)
    return 1e6 * elapsed / n


def redis_ping_us(n: int = 10_000) -> float:
    """Microseconds for one PING to a fresh local server and its reply."""
    import redis

    from redray.server import start_server

    server = start_server()
    try:
        client = redis.Redis(host=server.host, port=server.port, password=server.password)
        client.ping()
        start = time.perf_counter()
        for _ in range(n):
            client.ping()
        elapsed = time.perf_counter() - start
        client.close()
    finally:
        server.stop()
    return 1e6 * elapsed / n


def measure() -> dict[str, float]:
    return {"pipe_round_trip_us": pipe_round_trip_us(), "redis_ping_us": redis_ping_us()}


if __name__ == "__main__":
    got = measure()
    print(f"pipe round trip between two processes: {got['pipe_round_trip_us']:.1f} µs")
    print(f"Redis PING round trip on loopback:     {got['redis_ping_us']:.1f} µs")
