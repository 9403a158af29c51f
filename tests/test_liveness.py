"""Liveness measured honestly: heartbeats on threads of their own, ages on the
Redis server's clock, the cleanup of a dead job in bounded batches off the
heartbeat path, and drivers and nodes paused (SIGSTOP) past every timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
from conftest import assert_back_to_baseline, cluster_keys, free_cpus, wait_for, worker_env

import redray
from redray.cluster import Cluster
from redray.constants import Keys

PAUSABLE_DRIVER = textwrap.dedent(
    """
    import sys, time, redray
    redray.init(address=sys.argv[1], _job_grace_s=float(sys.argv[2]))

    @redray.remote
    def square(i, seconds):
        time.sleep(seconds)
        return i * i

    assert redray.get(square.remote(3, 0), timeout=60) == 9
    # still running when the test pauses us
    refs = [square.remote(i, float(sys.argv[3])) for i in range(4)]
    print("ready", flush=True)
    sys.stdin.readline()  # the test pauses us, resumes us, then writes a line
    try:
        print("result", redray.get(refs, timeout=60), flush=True)
    except Exception as exc:
        print("error", type(exc).__name__, exc, flush=True)
    """
)


def _pausable_driver(settings, grace: float, task_seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSABLE_DRIVER, settings.to_url(), str(grace), str(task_seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=worker_env(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line + (proc.stderr.read() if proc.stderr else "")
    return proc


def _pause(proc: subprocess.Popen[str], seconds: float) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(proc.pid, signal.SIGCONT)


def _finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate("go\n", timeout=90)
    assert proc.returncode == 0, err
    return out.strip().splitlines()[-1]


def test_a_driver_paused_past_the_old_timeout_keeps_its_job_and_gets_its_results(
    settings, node_factory, redis_client
):
    node_factory(num_cpus=2, config={"job_timeout": 2.0})
    proc = _pausable_driver(settings, grace=60, task_seconds=2)
    _pause(proc, 15)  # the first protocol reaped a driver silent for 10 s
    assert _finish(proc) == "result [0, 1, 4, 9]"


def test_a_driver_paused_past_its_grace_gets_job_reaped_error_at_once(
    settings, node_factory, redis_client
):
    node_factory(num_cpus=2, config={"job_timeout": 2.0})
    keys = Keys()
    proc = _pausable_driver(settings, grace=3, task_seconds=20)
    job = next(iter(redis_client.hkeys(keys.jobs))).decode()
    os.kill(proc.pid, signal.SIGSTOP)
    wait_for(lambda: not redis_client.hexists(keys.jobs, job), timeout=30, what="job reaped")
    os.kill(proc.pid, signal.SIGCONT)
    started = time.monotonic()
    last = _finish(proc)
    assert last.startswith("error JobReapedError"), last
    assert "grace" in last
    assert time.monotonic() - started < 15  # at once, not after get's 60 s timeout


def test_liveness_is_judged_by_the_servers_clock_not_the_drivers(settings, node_factory, tmp_path):
    """A driver whose wall clock is an hour behind keeps its job."""
    node_factory(num_cpus=2, config={"job_timeout": 2.0})
    (tmp_path / "sitecustomize.py").write_text(
        "import time\n_real = time.time\ntime.time = lambda: _real() - 3600\n"
    )
    script = textwrap.dedent(
        """
        import sys, time, redray
        redray.init(address=sys.argv[1])
        f = redray.remote(lambda i: i + 1)
        for i in range(8):
            assert redray.get(f.remote(i), timeout=30) == i + 1
            time.sleep(0.5)
        print("ok")
        """
    )
    env = worker_env()
    env["PYTHONPATH"] = str(tmp_path) + os.pathsep + env["PYTHONPATH"]
    done = subprocess.run(
        [sys.executable, "-c", script, settings.to_url()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "ok"


def test_nodes_keep_beating_while_a_dead_job_with_many_tasks_is_cleaned_up(
    settings, node_factory, redis_client
):
    """Cleanup runs in bounded batches on the reaper thread: neither node
    misses a heartbeat long enough for the other to declare it dead."""
    config = {"node_timeout": 4.0, "job_timeout": 1.0}
    first = node_factory(num_cpus=1, config=config)
    second = node_factory(num_cpus=1, config=config)
    cluster = Cluster.connect(settings)
    keys = cluster.keys
    # a dead driver's job: 30,000 tasks queued under a shape no node has
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    redis_client.hset(
        keys.jobs,
        "dead",
        json.dumps({"driver_host": socket.gethostname(), "driver_pid": dead.pid, "grace": 3600}),
    )
    shape = "CPU=10000,nowhere=10000"
    n = 1
    for start in range(0, 30_000, 2000):
        batch = [(n + i, f"{start + i:020x}", shape, b"spec", []) for i in range(2000)]
        n += 2000
        cluster.scripts.submit("dead", "driver-dead", batch)
    cluster.scripts.heartbeat(keys.jobs, keys.job_beats, "dead", retry=True)
    oldest_seen = 0
    while redis_client.exists(keys.job_tasks("dead")) or redis_client.hexists(keys.jobs, "dead"):
        now, _ = cluster.scripts.expired(keys.heartbeats, 3600)
        for _node, beat in redis_client.zrange(keys.heartbeats, 0, -1, withscores=True):
            oldest_seen = max(oldest_seen, now - int(beat))
        assert redis_client.hexists(keys.nodes, first.node_id)
        assert redis_client.hexists(keys.nodes, second.node_id)
        time.sleep(0.1)
    assert redis_client.zcard(keys.ready) == 0
    assert oldest_seen < 3000, f"a node went {oldest_seen} ms without a heartbeat"
    cluster.close()


@redray.remote
def logged(i: int, log_dir: str, seconds: float) -> int:
    with open(os.path.join(log_dir, f"runs-{os.getpid()}"), "a") as f:
        f.write(f"{i}\n")
    time.sleep(seconds)
    return i * 10


def test_a_node_paused_past_its_timeout_rejoins_and_nothing_is_lost_or_leaked(
    settings, node_factory, connect, redis_client, tmp_path
):
    config = {"node_timeout": 3.0}
    paused = node_factory(num_cpus=2, config=config)
    other = node_factory(num_cpus=2, config=config)
    keys = Keys()
    baseline = cluster_keys(redis_client, keys)
    connect()
    refs = [logged.remote(i, str(tmp_path), 1.5) for i in range(8)]
    wait_for(lambda: redis_client.hlen(keys.node_running(paused.node_id)) > 0)
    paused.kill(signal.SIGSTOP)  # the agent and its executors
    time.sleep(7)  # past node_timeout: the other node takes its tasks
    paused.kill(signal.SIGCONT)
    assert redray.get(refs, timeout=90) == [i * 10 for i in range(8)]
    ran = sorted(int(x) for p in Path(tmp_path).glob("runs-*") for x in p.read_text().split())
    assert set(ran) == set(range(8))  # at least once; a paused task may finish too
    # the paused node found itself declared dead, killed its executors and came back
    wait_for(lambda: redis_client.hexists(keys.nodes, paused.node_id), timeout=30)
    for node in (paused, other):
        wait_for(lambda node=node: free_cpus(redis_client, node.node_id) == 2.0, timeout=30)
        assert psutil.Process(node.process.pid).status() != psutil.STATUS_STOPPED
    redray.shutdown()
    assert_back_to_baseline(redis_client, keys, baseline)
