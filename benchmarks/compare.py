"""Run the microbenchmarks against redray and Ray 2.60 in one go; print ratios.

    python benchmarks/compare.py [--ray-python /opt/rayvenv/bin/python] [--seconds 2]

Ray runs in its own virtual environment (``pip install ray==2.60.0 numpy``)
given by ``--ray-python`` or ``$RAY_PYTHON``; without one only redray runs.
Targets are the issues': ratios redray/Ray (for seconds: Ray's / redray's).
It first prints what a wake-up costs on the machine (``round_trip.py``):
the latency lines' ratios move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: name -> (label, target ratio)
TARGETS = {
    "init_seconds": ("ray.init (s)", 2.3 / 0.3),
    "sync_tasks_per_s": ("sync tasks, get each (/s)", 2.0),
    "async_tasks_per_s": ("10k tasks, one get (/s)", 3.0),
    "chain_tasks_per_s": ("chain of dependent tasks (/s)", 2.0),
    "small_put_per_s": ("small put (/s)", 2.0),
    "small_get_per_s": ("small get (/s)", 1.0),
    "put_get_100mb_per_s": ("100 MB numpy put+get (/s)", 0.5),
    "task_100mb_arg_per_s": ("task on a 100 MB argument (/s)", None),
    "actor_sync_calls_per_s": ("1:1 actor calls, get each (/s)", 2.0),
    "actor_async_calls_per_s": ("10k actor calls, one get (/s)", 2.0),
    "create_100_actors_seconds": ("100 actors, one call each (s)", 1.0),
}

#: lines where lower is better (seconds)
SECONDS = {"init_seconds", "create_100_actors_seconds"}


def run(python: str, backend: str, seconds: float) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        subprocess.run(
            [
                python,
                str(HERE / "microbench.py"),
                "--backend",
                backend,
                "--json",
                out,
                "--seconds",
                str(seconds),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return dict(json.loads(Path(out).read_text()))
    finally:
        os.unlink(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray-python", default=os.environ.get("RAY_PYTHON", ""))
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    from round_trip import measure

    machine = measure()
    print(
        f"machine: pipe round trip {machine['pipe_round_trip_us']:.1f} µs, "
        f"Redis PING {machine['redis_ping_us']:.1f} µs"
    )
    ours = run(sys.executable, "redray", args.seconds)
    ray = run(args.ray_python, "ray", args.seconds) if args.ray_python else {}
    print(f"{'benchmark':34s} {'Ray 2.60':>10s} {'redray':>10s} {'ratio':>7s} {'target':>7s}")
    for name, (label, target) in TARGETS.items():
        mine = ours.get(name)
        theirs = ray.get(name)
        if mine is None:
            continue
        if theirs:
            ratio = theirs / mine if name in SECONDS else mine / theirs
            ratio_s = f"{ratio:6.2f}x"
        else:
            ratio_s = "   n/a"
        target_s = f"{target:6.2f}x" if target else "      -"
        theirs_s = f"{theirs:10.2f}" if theirs else "       n/a"
        print(f"{label:34s} {theirs_s} {mine:10.2f} {ratio_s} {target_s}")


if __name__ == "__main__":
    main()
