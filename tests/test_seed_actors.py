"""Seed 001 (the Ray Actors tutorial): its programs, with ``import redray as ray``
in place of ``import ray`` and nothing else changed, run as scripts on the
embedded default cluster (no init call), print what Ray prints and leave no
server, node agent or executor process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

#: a process whose command line holds one of these belongs to a redray cluster
CLUSTER_MARKERS = ("valkey-server", "redis-server", "redray.workers.node")
#: environment variable that tags every process one script run starts
TAG = "REDRAY_SEED_ACTORS_RUN"

COUNTER_ACTOR = """\
import redray as ray

@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


counter = Counter.remote()
init_value_ref = counter.get_count.remote()
init_value = ray.get(init_value_ref)
counter.increment.remote()
after_increment_value_ref = counter.get_count.remote()
after_increment_value = ray.get(after_increment_value_ref)

print(f"{init_value=}, {after_increment_value=}")
"""

COUNTER_ACTOR_INIT_100 = COUNTER_ACTOR.replace("Counter.remote()", "Counter.remote(100)")

INCREMENT_IN_TASK = """\
import redray as ray


@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


@ray.remote
def increment(counter: Counter, increment_num: int):
    for _ in range(increment_num):
        counter.increment.remote()


counter = Counter.remote()
increment_task_ref = increment.remote(counter, 10)
ray.get(increment_task_ref)
count = ray.get(counter.get_count.remote())
print(f"{count=}")
"""

NAMED_COUNTER = """\
import redray as ray

@ray.remote
class Counter:
    def __init__(self, init_count: int = 0):
        self.count = init_count

    def increment(self):
        self.count += 1

    def get_count(self) -> int:
        return self.count


counter_origin = Counter.options(name="counter").remote()
ray.get(counter_origin.increment.remote())
counter_origin_value = ray.get(counter_origin.get_count.remote())
print(f"{counter_origin_value=}")

counter_from_namespace = ray.get_actor("counter")
ray.get(counter_from_namespace.increment.remote())
counter_from_namespace_value = ray.get(counter_from_namespace.get_count.remote())
print(f"{counter_from_namespace_value=}")
"""

SEEDS = {
    "counter_actor.py": (COUNTER_ACTOR, ["init_value=0, after_increment_value=1"]),
    "counter_actor_init_100.py": (
        COUNTER_ACTOR_INIT_100,
        ["init_value=100, after_increment_value=101"],
    ),
    "increment_in_task.py": (INCREMENT_IN_TASK, ["count=10"]),
    "named_counter.py": (
        NAMED_COUNTER,
        ["counter_origin_value=1", "counter_from_namespace_value=2"],
    ),
}


def _cluster_processes() -> list[tuple[psutil.Process, str]]:
    """Live (non-zombie) processes that look like a redray server, node agent or executor."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(part for part in proc.info["cmdline"] or () if part)
        except (psutil.Error, TypeError):
            continue
        if any(marker in cmdline for marker in CLUSTER_MARKERS):
            found.append((proc, cmdline))
    return found


def _tagged(proc: psutil.Process, token: str) -> bool:
    try:
        return proc.environ().get(TAG) == token
    except psutil.Error:
        return False


class _Watcher:
    """Notes the server ports of the node agents a run starts, while it runs.

    The server itself cannot be told by its environment (redis-server and
    valkey-server overwrite it with their process title); its port, the one
    the node agent is connected to (its address is not on its command line),
    identifies it."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ports: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.look()
            self.stop.wait(0.05)

    def look(self) -> None:
        for proc, cmdline in _cluster_processes():
            if "redray.workers.node" in cmdline and _tagged(proc, self.token):
                try:
                    conns = proc.net_connections(kind="tcp")
                except psutil.Error:
                    continue
                self.ports.update(
                    str(c.raddr.port) for c in conns if c.raddr and c.raddr.ip == "127.0.0.1"
                )

    def __enter__(self) -> _Watcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def survivors(self, grace: float = 10.0) -> list[str]:
        """This run's cluster processes still alive after a grace period."""
        deadline = time.monotonic() + grace
        while True:
            left = [
                f"pid {proc.pid}: {cmdline[:160]}"
                for proc, cmdline in _cluster_processes()
                if _tagged(proc, self.token)
                or any(re.search(rf"[:\s]{port}\b", cmdline) for port in self.ports)
            ]
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.2)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_actor_program(name, tmp_path):
    source, expected = SEEDS[name]
    script = tmp_path / name
    script.write_text(source)
    token = uuid.uuid4().hex
    env = dict(os.environ)
    env.pop("REDRAY_ADDRESS", None)  # the embedded default cluster
    env["PYTHONUNBUFFERED"] = "1"
    env[TAG] = token
    with _Watcher(token) as watcher:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=90,
        )
    report = f"exit code {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, report
    assert done.stdout.splitlines() == expected, report
    assert watcher.ports, "the script did not start its own (embedded) cluster"
    left = watcher.survivors()
    assert not left, "left running after the script exited:\n" + "\n".join(left)
