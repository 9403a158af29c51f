"""The chaos soak at a small size, in CI: executors, whole nodes and the Redis
server (AOF, fsync on every write) SIGKILLed at random while a workload runs.
``benchmarks/chaos_soak.py`` is the harness (the 20,000-task, 90 s version is
run from there); it exits 0 only if no task was lost, no result was wrong or
announced twice, no reservation leaked and the keys came back to baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, worker_env


@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", [11, 12])
def test_chaos_soak_loses_nothing_and_duplicates_nothing(tmp_path, seed):
    report = tmp_path / "soak.json"
    args = [
        sys.executable,
        str(REPO_ROOT / "benchmarks" / "chaos_soak.py"),
        "--tasks", "1500",
        "--duration", "15",
        "--kill-rate", "1.0",
        "--seed", str(seed),
        "--grace", "120",
        "--json", str(report),
    ]  # fmt: skip
    binary = os.environ.get("REDRAY_TEST_SERVER")
    if binary:
        args += ["--server-binary", binary]
    done = subprocess.run(args, capture_output=True, text=True, timeout=380, env=worker_env())
    tail = (done.stdout[-3000:] + "\n" + done.stderr[-3000:]).strip()
    assert report.exists(), tail
    figures = json.loads(report.read_text())
    assert figures["lost"] == 0, tail
    assert figures["wrong"] == 0, tail
    assert figures["duplicate_notices"] == 0, tail
    assert not figures["leaked_reservations"], tail
    assert not figures["leftover_keys"], tail
    assert sum(figures["kills"].values()) > 0, tail
    assert done.returncode == 0, tail
