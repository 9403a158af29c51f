"""Every script in ``examples/`` runs as ``python examples/x.py`` would on a
fresh machine: its own embedded cluster, exit code 0, the expected output, and
no server, node agent or executor left behind once it has exited.

The expectations live in ``examples/run_all.py`` (``EXAMPLES``), shared with
the stand-alone runner.
"""

from __future__ import annotations

import importlib.util
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import psutil
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "examples"

#: a process whose command line holds one of these belongs to a redray cluster
CLUSTER_MARKERS = ("valkey-server", "redis-server", "redray.workers.node")
#: environment variable that tags every process one example run starts
TAG = "REDRAY_EXAMPLE_TEST_RUN"


def _load_runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "redray_examples_run_all", EXAMPLES_DIR / "run_all.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


run_all = _load_runner()


def _cluster_processes() -> dict[int, psutil.Process]:
    """Live processes that look like a redray server, node agent or executor."""
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or ())
        except (psutil.Error, TypeError):
            continue
        if any(marker in cmdline for marker in CLUSTER_MARKERS):
            found[proc.pid] = proc
    return found


def _started_by(proc: psutil.Process, token: str) -> bool:
    """True if ``proc`` inherited this run's tag (False if it has gone)."""
    try:
        return proc.environ().get(TAG) == token
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        # environment unreadable: count it, as it was not there before
        return True


def _survivors(before: dict[int, psutil.Process], token: str) -> list[str]:
    """Cluster processes this run started that are still alive (after a grace period).

    Processes other test sessions start meanwhile are told apart by the tag
    every process of this run inherits through its environment.
    """
    deadline = time.monotonic() + 10
    while True:
        left = []
        for pid, proc in _cluster_processes().items():
            if pid in before and before[pid].create_time() == proc.create_time():
                continue
            if _started_by(proc, token) and proc.is_running():
                try:
                    if proc.status() == psutil.STATUS_ZOMBIE:
                        continue
                    left.append(f"pid {pid}: {' '.join(proc.cmdline())[:160]}")
                except psutil.Error:
                    continue
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def test_every_example_is_checked() -> None:
    on_disk = {p.name for p in EXAMPLES_DIR.glob("*.py")} - {"run_all.py"}
    assert on_disk == set(run_all.EXAMPLES), (
        "each example needs an entry (expected output) in examples/run_all.py's EXAMPLES"
    )


@pytest.mark.timeout(150)
@pytest.mark.parametrize("name", sorted(run_all.EXAMPLES))
def test_example(name: str) -> None:
    token = uuid.uuid4().hex
    before = _cluster_processes()
    outcome = run_all.run_example(name, env=run_all.example_env({TAG: token}))
    survivors = _survivors(before, token)
    report = (
        f"{name}: exit code {outcome.returncode} after {outcome.seconds:.1f} s\n"
        f"--- stdout\n{outcome.stdout}\n--- stderr\n{outcome.stderr[-4000:]}"
    )
    assert outcome.returncode == 0, report
    assert not outcome.problems, "\n".join(outcome.problems) + "\n" + report
    assert not survivors, "left running after the example exited:\n" + "\n".join(survivors)


def test_expected_output_checks_catch_a_wrong_result() -> None:
    """The output checks reject what a broken run would print."""
    assert run_all.check_output("calculate_add.py", "[1, 2, 3, 4]\n") == []
    assert run_all.check_output("calculate_add.py", "[1, 2, 3]\n")
    assert run_all.check_output("argument_ref.py", "[5.0, 10.0, 15.0, 20.0]\n") == []
    assert run_all.check_output("argument_ref.py", "[5, 10, 15, 20]\n")
    assert run_all.check_output("cancel_job.py", "")
    good_wait = (
        "ready_refs=[ObjectRef(ab01), ObjectRef(ab02)]\n"
        "remain_refs=[ObjectRef(ab03), ObjectRef(ab04)]\n"
        "2 ready, 2 still running after 1.0 s; ready are the short sleeps: True\n"
    )
    assert run_all.check_output("wait_sleep.py", good_wait) == []
    assert run_all.check_output("wait_sleep.py", good_wait.replace("True", "False"))
    streamed = "".join(f"{i} (after {0.5 + i * 0.5:.1f} s)\n" for i in range(5))
    assert run_all.check_output("generator_stream.py", streamed) == []
    at_once = "".join(f"{i} (after 2.6 s)\n" for i in range(5))
    assert run_all.check_output("generator_stream.py", at_once)
