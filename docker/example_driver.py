"""The compose file's example driver: tasks and an actor on the compose cluster.

It connects to the cluster named by ``REDRAY_ADDRESS`` (the address with the
Redis password, from docker/.env) and signs its payloads with
``REDRAY_SECRET``; neither is ever on a command line. Run it with

    docker compose --env-file docker/.env -f docker/docker-compose.yml run --rm driver

It prints what it computed and on how many nodes, and exits with 0.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import redray as ray


@ray.remote
def square(x: int) -> tuple[int, str]:
    time.sleep(0.2)  # long enough for the tasks to spread over the workers
    return x * x, ray.get_runtime_context().get_node_id()


@ray.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def increment(self, by: int = 1) -> int:
        self.count += by
        return self.count

    def where(self) -> str:
        return socket.gethostname()


def main() -> int:
    if not os.environ.get("REDRAY_ADDRESS"):
        print("REDRAY_ADDRESS is not set: run this as the compose file's driver service.")
        return 2
    ray.init()  # REDRAY_ADDRESS; REDRAY_SECRET signs every payload
    try:
        alive = [n for n in ray.nodes() if n.get("Alive", True)]
        print(f"cluster: {len(alive)} node(s), {ray.cluster_resources().get('CPU', 0):g} CPU")
        results = ray.get([square.remote(i) for i in range(16)])
        squares = [value for value, _ in results]
        nodes = sorted({node for _, node in results})
        print(f"squares: {squares}")
        print(f"tasks ran on {len(nodes)} node(s): {' '.join(nodes)}")
        counter = Counter.remote()
        for _ in range(10):
            counter.increment.remote()
        print(f"counter: {ray.get(counter.increment.remote(0))}")
        print(f"actor host: {ray.get(counter.where.remote())}")
        ray.kill(counter)
        ok = squares == [i * i for i in range(16)]
    finally:
        ray.shutdown()
    print("ok" if ok else "WRONG RESULTS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
