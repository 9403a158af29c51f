"""What signing payloads costs: the microbenchmarks with and without a cluster
secret, interleaved, beside Ray 2.60 in the same run.

    python benchmarks/signing_cost.py [--rounds 5] [--ray-python /opt/rayvenv/bin/python]

Each round runs ``microbench.py`` once unsigned and once with
``REDRAY_SECRET`` set (its private cluster then signs every spec, call and
record, and checks each before unpickling), in alternating order. Per line:
the medians over the rounds, the median of the rounds' own signed/unsigned
ratios (each round's two runs are back to back, so this ratio holds while
the machine's speed drifts between rounds: quote it), and Ray's figures from
one run for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINES = {
    "sync_tasks_per_s": "sync tasks, get each (/s)",
    "async_tasks_per_s": "10k tasks, one get (/s)",
    "actor_sync_calls_per_s": "1:1 actor calls, get each (/s)",
    "actor_async_calls_per_s": "10k actor calls, one get (/s)",
    "put_get_100mb_per_s": "100 MB numpy put+get (/s)",
}


def run(python: str, backend: str, seconds: float, secret: str | None) -> dict[str, float]:
    env = dict(os.environ)
    env.pop("REDRAY_SECRET", None)
    env.pop("REDRAY_ADDRESS", None)
    if secret:
        env["REDRAY_SECRET"] = secret
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    try:
        subprocess.run(
            [python, str(HERE / "microbench.py"), "--backend", backend, "--json", out,
             "--seconds", str(seconds), "--only", ",".join(LINES)],
            check=True, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        return dict(json.loads(Path(out).read_text()))
    finally:
        os.unlink(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--ray-python", default=os.environ.get("RAY_PYTHON"))
    parser.add_argument("--json", help="write the medians here")
    args = parser.parse_args()

    secret = os.urandom(16).hex()
    plain: dict[str, list[float]] = {k: [] for k in LINES}
    signed: dict[str, list[float]] = {k: [] for k in LINES}
    for i in range(args.rounds):
        order = [(plain, None), (signed, secret)]
        for bucket, key in order if i % 2 == 0 else reversed(order):
            got = run(sys.executable, "redray", args.seconds, key)
            for name in LINES:
                bucket[name].append(got[name])
        print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    ray = run(args.ray_python, "ray", args.seconds, None) if args.ray_python else {}

    print(f"{'benchmark':34s} {'unsigned':>10s} {'signed':>10s} {'paired ratio':>13s}"
          f" {'range':>13s} {'Ray 2.60':>10s} {'signed/Ray':>10s}")  # fmt: skip
    report = {}
    for name, label in LINES.items():
        a, b = statistics.median(plain[name]), statistics.median(signed[name])
        pairs = [s / u for s, u in zip(signed[name], plain[name])]
        paired = statistics.median(pairs)
        r = ray.get(name)
        report[name] = {"unsigned": a, "signed": b, "paired_ratio": paired, "pairs": pairs,
                        "ray": r}  # fmt: skip
        ray_part = f"{r:10.1f} {b / r:9.2f}x" if r else f"{'-':>10s} {'-':>10s}"
        spread = f"{min(pairs):.2f}-{max(pairs):.2f}"
        print(f"{label:34s} {a:10.1f} {b:10.1f} {paired:12.3f}x {spread:>13s} {ray_part}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
