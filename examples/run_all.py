"""Run every example as its own process and check what it prints.

    python examples/run_all.py            # all examples
    python examples/run_all.py wait_sleep  # only those whose name contains 'wait_sleep'

Each example starts (and stops) its own private cluster, as a user's script
would: a Redis-compatible server on a free loopback port and one worker node.
``REDRAY_ADDRESS`` is removed from the examples' environment so that they
never attach to a shared cluster. Exits with status 1 if any example fails.
``tests/test_examples.py`` runs the same checks under pytest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
REPO_ROOT = EXAMPLES_DIR.parent


@dataclass(frozen=True)
class Expect:
    """What one example must print, and how long it may take."""

    #: lines that must appear in stdout exactly (surrounding spaces ignored)
    lines: tuple[str, ...] = ()
    #: regular expressions that must each match a line of stdout
    patterns: tuple[str, ...] = ()
    #: the example must finish (start-up and shutdown included) within this
    max_seconds: float = 60.0
    #: extra notes printed with a failure
    notes: tuple[str, ...] = field(default_factory=tuple)


_REF = r"ObjectRef\([0-9a-f]+\)"

EXAMPLES: dict[str, Expect] = {
    # seed 000 (the Japanese "Ray Tasks" tutorial)
    "slow_function.py": Expect(
        patterns=(
            r"^4 tasks of 1 s each finished in \d+\.\d+ s",
            r"^at most [1-4] of them ran at the same time$",
        ),
    ),
    "calculate_add.py": Expect(lines=("[1, 2, 3, 4]",)),
    "argument_ref.py": Expect(lines=("[5.0, 10.0, 15.0, 20.0]",)),
    "wait_sleep.py": Expect(
        patterns=(
            rf"^ready_refs=\[{_REF}, {_REF}\]$",
            rf"^remain_refs=\[{_REF}, {_REF}\]$",
            r"^2 ready, 2 still running after .* ready are the short sleeps: True$",
        ),
        # the 20 s and 30 s tasks must not hold up the exit
        max_seconds=15.0,
    ),
    "multiple_returns.py": Expect(lines=("[1, 2, 3]", "1 2 3")),
    "cancel_job.py": Expect(lines=("Object reference was cancelled.",), max_seconds=30.0),
    # seeds 002/003 (Ray Core's "Tasks" guide)
    "tasks_walkthrough.py": Expect(
        lines=(
            "my_function: 1",
            "function_with_an_argument: 2",
            "wait: 1 ready, 1 remaining",
            "return_single: (0, 1, 2)",
            "return_multiple: [0, 1, 2]",
            "return_multiple_as_generator: [0, 1, 2]",
            "slow_function x4: [1, 1, 1, 1]",
            "All assertions passed.",
        )
    ),
    "nested_tasks.py": Expect(
        lines=(
            "g returned 4 refs: True",
            "values of g's refs: [1, 1, 1, 1]",
            "h: [1, 1, 1, 1]",
        )
    ),
    "blocking_get.py": Expect(lines=("f ran while g was blocked",)),
    "generator_stream.py": Expect(
        patterns=tuple(rf"^{i} \(after \d+\.\d s\)$" for i in range(5)),
    ),
    # seed 004 (a Japanese Ray primer)
    "square.py": Expect(lines=("[0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",)),
    "put_shared.py": Expect(lines=("sum of range(1000000) = 499999500000",)),
    # seed 001 (the Japanese "Ray Actors" tutorial)
    "counter_actor.py": Expect(lines=("init_value=0, after_increment_value=1",)),
    "increment_in_task.py": Expect(lines=("count=10",)),
    "named_counter.py": Expect(lines=("counter_origin_value=1", "counter_from_namespace_value=2")),
}


@dataclass
class Outcome:
    name: str
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def example_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDRAY_ADDRESS", None)  # always the embedded cluster
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def check_output(name: str, stdout: str) -> list[str]:
    """What is wrong with an example's stdout (empty when all is well)."""
    expect = EXAMPLES[name]
    out_lines = [line.strip() for line in stdout.splitlines()]
    problems = [f"missing line {line!r}" for line in expect.lines if line not in out_lines]
    for pattern in expect.patterns:
        if not any(re.search(pattern, line) for line in out_lines):
            problems.append(f"no line matches {pattern!r}")
    if name == "slow_function.py":
        problems.extend(_check_parallel(stdout))
    if name == "generator_stream.py":
        problems.extend(_check_streaming(stdout))
    return problems


def _check_streaming(stdout: str) -> list[str]:
    """The values must arrive one by one, not all when the task ends."""
    times = [float(t) for t in re.findall(r"\(after (\d+\.\d) s\)", stdout)]
    if len(times) == 5 and times[-1] - times[0] < 1.0:
        return [f"the 5 values arrived together ({times}), not streamed"]
    return []


def _check_parallel(stdout: str) -> list[str]:
    """The 4 one-second tasks must overlap when the machine has 2+ CPUs: a
    fact about the tasks' own start and end times, not about how fast the
    machine is."""
    match = re.search(r"at most (\d) of them ran at the same time", stdout)
    cpus = os.cpu_count() or 1
    if match is None or cpus < 2:
        return []
    at_once, expected = int(match.group(1)), min(cpus, 4)
    if at_once < expected:
        return [f"only {at_once} of the 4 tasks ran at once on {cpus} CPUs (expected {expected})"]
    return []


def run_example(name: str, env: dict[str, str] | None = None) -> Outcome:
    expect = EXAMPLES[name]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES_DIR / name)],
            cwd=REPO_ROOT,
            env=env if env is not None else example_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=expect.max_seconds + 30,
        )
    except subprocess.TimeoutExpired as exc:
        seconds = time.monotonic() - start
        return Outcome(
            name,
            None,
            seconds,
            _text(exc.stdout),
            _text(exc.stderr),
            [f"did not finish within {expect.max_seconds + 30:.0f} s"],
        )
    seconds = time.monotonic() - start
    problems: list[str] = []
    if proc.returncode != 0:
        problems.append(f"exit code {proc.returncode}")
    problems.extend(check_output(name, proc.stdout))
    if seconds > expect.max_seconds:
        problems.append(f"took {seconds:.1f} s (limit {expect.max_seconds:.0f} s)")
    return Outcome(name, proc.returncode, seconds, proc.stdout, proc.stderr, problems)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def main(argv: list[str]) -> int:
    on_disk = sorted(p.name for p in EXAMPLES_DIR.glob("*.py") if p.name != "run_all.py")
    unknown = [n for n in on_disk if n not in EXAMPLES]
    names = [n for n in EXAMPLES if not argv or any(a in n for a in argv)]
    if not names:
        print(f"no example matches {argv}; known: {', '.join(EXAMPLES)}")
        return 2
    outcomes = []
    for name in names:
        print(f"--- {name}", flush=True)
        outcome = run_example(name)
        outcomes.append(outcome)
        for line in outcome.stdout.splitlines():
            print(f"    {line}")
        status = "ok" if outcome.ok else "FAILED"
        print(f"    [{status} in {outcome.seconds:.1f} s]", flush=True)
        if not outcome.ok:
            for problem in outcome.problems:
                print(f"    ! {problem}")
            for note in EXAMPLES[name].notes:
                print(f"    note: {note}")
            if outcome.stderr.strip():
                print("    stderr:")
                for line in outcome.stderr.splitlines()[-30:]:
                    print(f"      {line}")
    failed = [o for o in outcomes if not o.ok]
    print()
    print("Summary")
    for o in outcomes:
        print(f"  {'ok    ' if o.ok else 'FAILED'}  {o.name:<30} {o.seconds:5.1f} s")
    for name in unknown:
        print(f"  (not checked: {name} has no entry in run_all.EXAMPLES)")
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} examples passed.")
    return 1 if failed or unknown else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
