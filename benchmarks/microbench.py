"""Ray Core microbenchmarks, run against redray or Ray (same code, same machine).

    python benchmarks/microbench.py --backend redray --json out.json
    /path/to/ray-venv/bin/python benchmarks/microbench.py --backend ray --json ray.json

``benchmarks/compare.py`` runs both in one go and prints the ratio per line.
Each line reports operations per second (higher is better), except ``init``
which reports seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any


def timeit(fn: Callable[[], int], min_seconds: float, max_rounds: int = 20) -> float:
    """Best ops/s over rounds of ``fn`` (which returns how many ops it did)."""
    fn()  # warm-up
    best = 0.0
    spent = 0.0
    rounds = 0
    while (spent < min_seconds or rounds < 3) and rounds < max_rounds:
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        spent += dt
        rounds += 1
        best = max(best, n / dt)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=["redray", "ray"], default="redray")
    parser.add_argument("--json", help="write results here")
    parser.add_argument("--seconds", type=float, default=2.0, help="minimum time per line")
    parser.add_argument("--only", help="comma-separated names to run")
    args = parser.parse_args()

    import numpy as np

    if args.backend == "ray":
        import ray
    else:
        import redray as ray  # type: ignore[no-redef]

    only = set(args.only.split(",")) if args.only else None
    results: dict[str, float] = {}

    t0 = time.perf_counter()
    if args.backend == "ray":
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(num_cpus=2)
    results["init_seconds"] = time.perf_counter() - t0

    @ray.remote
    def noop() -> None:
        return None

    @ray.remote
    def inc(x: int) -> int:
        return x + 1

    @ray.remote
    def nbytes(a: Any) -> int:
        return int(a.nbytes)

    def want(name: str) -> bool:
        return only is None or name in only

    def sync_tasks() -> int:
        n = 300
        for _ in range(n):
            ray.get(noop.remote())
        return n

    def async_tasks() -> int:
        n = 10_000
        ray.get([noop.remote() for _ in range(n)])
        return n

    def chain() -> int:
        n = 300
        ref = inc.remote(0)
        for _ in range(n - 1):
            ref = inc.remote(ref)
        assert ray.get(ref) == n
        return n

    def small_put() -> int:
        n = 2000
        for i in range(n):
            ray.put(i)
        return n

    small_ref = ray.put(b"x" * 100)

    def small_get() -> int:
        n = 5000
        for _ in range(n):
            ray.get(small_ref)
        return n

    big = np.ones(100 * 1024 * 1024 // 8, dtype=np.float64)

    def big_roundtrip() -> int:
        n = 3
        for _ in range(n):
            out = ray.get(ray.put(big))
            assert out.nbytes == big.nbytes
        return n

    big_ref = ray.put(big)

    def task_big_arg() -> int:
        n = 10
        ray.get([nbytes.remote(big_ref) for _ in range(n)])
        return n

    @ray.remote
    class Echo:
        def f(self) -> None:
            return None

    echo = Echo.remote()
    ray.get(echo.f.remote())

    def actor_sync() -> int:
        n = 300
        for _ in range(n):
            ray.get(echo.f.remote())
        return n

    def actor_async() -> int:
        n = 10_000
        ray.get([echo.f.remote() for _ in range(n)])
        return n

    lines: list[tuple[str, Callable[[], int]]] = [
        ("sync_tasks_per_s", sync_tasks),
        ("async_tasks_per_s", async_tasks),
        ("chain_tasks_per_s", chain),
        ("small_put_per_s", small_put),
        ("small_get_per_s", small_get),
        ("put_get_100mb_per_s", big_roundtrip),
        ("task_100mb_arg_per_s", task_big_arg),
        ("actor_sync_calls_per_s", actor_sync),
        ("actor_async_calls_per_s", actor_async),
    ]
    for name, fn in lines:
        if want(name):
            results[name] = timeit(fn, args.seconds)
            print(f"{args.backend:7s} {name:24s} {results[name]:12.1f}", file=sys.stderr)

    if want("create_100_actors_seconds"):
        # 100 new actors, one call each (measured once: it is slow on Ray)
        t0 = time.perf_counter()
        actors = [Echo.remote() for _ in range(100)]
        ray.get([a.f.remote() for a in actors])
        results["create_100_actors_seconds"] = time.perf_counter() - t0
        took = results["create_100_actors_seconds"]
        print(f"{args.backend:7s} create_100_actors_seconds {took:8.2f}", file=sys.stderr)
        for a in actors:
            ray.kill(a)

    ray.shutdown()
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
