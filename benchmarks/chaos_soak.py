"""Chaos soak: thousands of short tasks while executors, nodes and Redis are SIGKILLed.

It starts, in a scratch directory, a persistent Redis-compatible server (AOF,
``appendfsync always``, so a SIGKILL of the server loses no acknowledged write)
on a free port and ``--nodes`` worker node processes (each in its own process
group), connects a driver, submits ``--tasks`` tasks and collects their results
while a chaos thread, for ``--duration`` seconds (or until every result is in),
picks at random (seeded by ``--seed``) a delay (exponential, ``--kill-rate``
kills per second on average) and one of the ``--kinds`` of kill:

* ``executor``: SIGKILL one executor process (a child of a random live node);
* ``node``: SIGKILL a whole node (its process group: agent and executors) and
  start a fresh node in its place;
* ``redis``: SIGKILL the server and start it again in place (same port, same
  directory, so it reloads its append-only file).

Every kill is logged with its time. Tasks are all submitted before the chaos
starts (a ``.remote()`` refused while Redis is down may or may not have queued
its task, which would blur the count). Once the chaos stops the driver waits
for every result, up to ``--grace`` seconds more (or, sooner, ``--stall``
seconds without a result once every missing task is finished in Redis and no
notice waits in the driver's inbox); past that it reports the task ids still
missing, with what Redis holds for each, instead of hanging. Then it checks the
delivery guarantee:

* lost: tasks with no result; wrong: results that are not ``10 * i`` (or are
  errors; tasks are submitted with ``max_retries=-1`` by default, so no crash
  may surface as an error);
* never ran: tasks that no run log names (each run appends
  ``"<i> <pid> <node> <unix time>"`` to ``runs/runs-<pid>`` in the scratch
  directory, outside Redis); the runs per task are reported too (re-runs are
  allowed: execution is at-least-once);
* duplicate notices: objects whose completion notice reached the driver more
  than once (the driver counts them, see ``_count_notices``);
* leaked reservations: once every result is in, each live node's free
  resources (``node:<id>:avail``) must come back to its totals and its running
  set must empty (polled), and dead nodes must have been reaped;
* keys at baseline: after ``shutdown()`` and stopping the nodes only the
  cluster-lifetime keys (``jobcounter``, ``seq``, ``shapes``, ``deadletters``)
  may remain;
* processes left behind: any process still in one of the nodes' process groups.

It prints a summary, writes every figure to ``--json`` if given, and exits 0
only if nothing was lost, nothing was wrong, no notice was duplicated, no
reservation leaked and the keys are back at baseline (1 otherwise, 2 on a
harness error). Nodes, server and the scratch directory are cleaned up in every
case, Ctrl-C included (a directory given with ``--workdir`` is kept, with the
node logs, run logs and the server's files, for inspection).

Node settings chosen here: ``node_timeout`` 5 s (``--node-timeout``; the
default is 10 s) so a killed node's tasks are taken over quickly;
``job_timeout`` stays at the default 10 s (``--job-timeout``): the driver never
dies in this soak, and a shorter one would risk a loaded machine's live driver
being reaped around a Redis restart.

Full size (20000 tasks of 20 ms, 3 nodes of 2 CPUs, 90 s of about one kill a
second; about 2 minutes on a 2-core machine when nothing is lost, up to
``--grace`` more when something is)::

    .venv/bin/python benchmarks/chaos_soak.py --seed 1 --json soak.json

A small size (2000 tasks finish in about 10 s on 2 cores, so the chaos ends
early, after some ten kills)::

    .venv/bin/python benchmarks/chaos_soak.py --tasks 2000 --duration 20 --seed 1

Without chaos (a sanity run, which must pass)::

    .venv/bin/python benchmarks/chaos_soak.py --tasks 2000 --duration 0
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import redis

import redray as ray
from redray.constants import Keys
from redray.node_launch import module_command
from redray.server import ServerProcess, free_port, launch_server, wait_ready
from redray.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

#: keys that outlive every job by design (see tests/conftest.py)
CLUSTER_LIFETIME = {"jobcounter", "seq", "shapes", "deadletters", "task:ended"}
KINDS = ("executor", "node", "redis")


# -- the task ------------------------------------------------------------------------------


@ray.remote
def work(i: int, log_dir: str, seconds: float) -> int:
    """Log this run (outside Redis, one file per process), sleep, return 10 i.

    The line is ``"<i> <pid> <node id> <unix time>"`` (the time lets a lost task
    be matched against the kill log)."""
    with open(os.path.join(log_dir, f"runs-{os.getpid()}"), "a") as f:
        node = ray.get_runtime_context().get_node_id()
        f.write(f"{i} {os.getpid()} {node} {time.time():.6f}\n")
        f.flush()
    time.sleep(seconds)
    return 10 * i


# -- the proof's instrument -----------------------------------------------------------------


def _count_notices() -> collections.Counter[str]:
    """Count the completion notices this driver applies, per object id.

    The one place that knows how notices reach the driver: it wraps
    ``Inbox.handle`` (which returns the object id a notice made ready, or
    None). Re-point it here when the runtime's internals change.
    """
    from redray.inbox import Inbox

    notices: collections.Counter[str] = collections.Counter()
    handle = getattr(Inbox, "handle", None)
    if handle is None:
        raise RuntimeError("Inbox.handle is gone: re-point _count_notices()")

    def counting(inbox: Any, raw: bytes) -> str | None:
        oid: str | None = handle(inbox, raw)
        if oid is not None:
            notices[oid] += 1
        return oid

    setattr(Inbox, "handle", counting)  # noqa: B010 - a patch, on purpose
    return notices


# -- the cluster ----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class PersistentServer:
    """A server with AOF and fsync on every write, SIGKILLed and restarted in place."""

    def __init__(self, directory: str, binary: str | None) -> None:
        self.directory = directory
        self.binary = binary
        self.port = free_port()
        self.server: ServerProcess | None = None

    def start(self) -> None:
        self.server = launch_server(
            binary=self.binary,
            port=self.port,
            directory=self.directory,
            appendonly=True,
            extra_args=["--appendfsync", "always"],
        )
        self.server.owns_directory = False
        wait_ready(self.server, timeout=60)

    def kill(self) -> None:
        if self.server is not None and self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@dataclass
class Node:
    process: subprocess.Popen[bytes]
    node_id: str
    log_path: str
    pgid: int = 0
    killed: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(BENCH_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in parts if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_node(
    settings: Settings, workdir: Path, cpus: float, config: dict[str, Any], timeout: float = 60
) -> Node:
    """Start a node in its own process group; wait until its executors may claim work."""
    node_id = uuid.uuid4().hex[:16]
    node_config = {
        "address": settings.to_url(),
        "num_cpus": cpus,
        "node_id": node_id,
        **config,
    }
    log_path = str(workdir / "logs" / f"node-{node_id}.log")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            module_command("redray.workers.node", json.dumps(node_config)),
            env=worker_env(),
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    node = Node(proc, node_id, log_path, pgid=proc.pid)
    client = settings.client(blocking=True)
    key = Keys(settings.prefix).node_ready(node_id)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if client.blpop([key], timeout=0.5) is not None:
                    client.delete(key)
                    return node
            except redis.ConnectionError:
                time.sleep(0.2)
            if proc.poll() is not None:
                raise RuntimeError(f"node {node_id} exited with code {proc.returncode}")
        node.kill()
        raise RuntimeError(f"node {node_id} did not start in {timeout} s")
    except BaseException:
        if node.alive():
            node.kill()
        raise
    finally:
        client.close()


def executors_of(node: Node) -> list[psutil.Process]:
    try:
        children = psutil.Process(node.process.pid).children()
    except psutil.Error:
        return []
    out = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child)
        except psutil.Error:
            pass
    return out


# -- chaos ----------------------------------------------------------------------------------


class Chaos:
    """Kills at random, seeded; one action at a time (held under ``lock``)."""

    def __init__(
        self,
        args: argparse.Namespace,
        kinds: list[str],
        server: PersistentServer,
        nodes: list[Node],
        start_new_node: Any,
        t0: float,
    ) -> None:
        self.args = args
        self.kinds = kinds
        self.server = server
        self.nodes = nodes
        self.start_new_node = start_new_node
        self.t0 = t0
        self.rng = random.Random(args.seed)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.kills: collections.Counter[str] = collections.Counter()
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.redis_restart_seconds: list[float] = []
        self.started = 0.0
        self.ended = 0.0
        self.thread = threading.Thread(target=self.run, name="chaos", daemon=True)

    def record(self, kind: str, **what: Any) -> None:
        now = time.time()
        event = {"t": round(time.monotonic() - self.t0, 3), "unix": now, "kind": kind, **what}
        self.events.append(event)
        self.kills[kind] += 1
        detail = " ".join(f"{k}={v}" for k, v in what.items())
        log(f"KILL #{len(self.events)} t={event['t']:.2f}s {kind} {detail}")

    def run(self) -> None:
        self.started = time.monotonic()
        end = self.started + self.args.duration
        try:
            while not self.stop.is_set():
                delay = self.rng.expovariate(self.args.kill_rate) if self.args.kill_rate > 0 else 1
                if time.monotonic() + delay >= end:
                    self.stop.wait(max(0.0, end - time.monotonic()))
                    break
                if self.stop.wait(delay):
                    break
                kind = self.rng.choice(self.kinds)
                with self.lock:
                    if self.stop.is_set():
                        break
                    try:
                        getattr(self, "kill_" + kind)()
                    except Exception as exc:  # noqa: BLE001 - reported, chaos goes on
                        self.errors.append(f"{kind}: {exc!r}")
                        log(f"chaos: {kind} kill failed: {exc!r}")
        finally:
            self.ended = time.monotonic()

    def live_nodes(self) -> list[Node]:
        return [n for n in self.nodes if not n.killed and n.alive()]

    def kill_executor(self) -> None:
        nodes = self.live_nodes()
        self.rng.shuffle(nodes)
        for node in nodes:
            procs = executors_of(node)
            if not procs:
                continue
            victim = self.rng.choice(sorted(procs, key=lambda p: p.pid))
            try:
                os.kill(victim.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.record("executor", node=node.node_id, pid=victim.pid)
            return
        self.errors.append("executor: no live executor to kill")

    def kill_node(self) -> None:
        nodes = self.live_nodes()
        if not nodes:
            self.errors.append("node: no live node to kill")
            return
        victim = self.rng.choice(nodes)
        victim.kill()
        victim.killed = True
        self.record("node", node=victim.node_id, pid=victim.process.pid)
        t = time.monotonic()
        new = self.start_new_node()
        log(f"chaos: node {new.node_id} replaces {victim.node_id} ({time.monotonic() - t:.1f} s)")

    def kill_redis(self) -> None:
        assert self.server.server is not None
        pid = self.server.server.pid
        self.server.kill()
        self.record("redis", pid=pid, port=self.server.port)
        t = time.monotonic()
        time.sleep(self.args.redis_down)
        for attempt in range(5):
            try:
                self.server.start()
                break
            except RuntimeError as exc:  # e.g. the port not free yet
                log(f"chaos: redis restart attempt {attempt + 1} failed: {exc}")
                self.server.kill()
                time.sleep(1.0)
        else:
            raise RuntimeError(f"redis did not restart on port {self.server.port}")
        took = time.monotonic() - t
        self.redis_restart_seconds.append(round(took, 3))
        log(f"chaos: redis back on port {self.server.port} after {took:.2f} s")


# -- the soak -------------------------------------------------------------------------------


def read_runs(run_dir: Path) -> list[tuple[int, int, str, float]]:
    """Every logged run: (task index, pid, node id, unix time)."""
    out = []
    for path in sorted(run_dir.glob("runs-*")):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) in (3, 4) and parts[0].isdigit():
                t = float(parts[3]) if len(parts) == 4 else 0.0
                out.append((int(parts[0]), int(parts[1]), parts[2], t))
    return out


def cluster_keys(client: redis.Redis, keys: Keys) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=keys.tag + ":*", count=1000)}


def retrying(fn: Any, what: str, timeout: float = 120) -> Any:
    """Call ``fn`` until Redis answers (it may be restarting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (ConnectionError, redis.RedisError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: Redis did not answer in {timeout} s: {exc}") from exc
            time.sleep(0.2)


def check_reservations(
    client: redis.Redis, keys: Keys, live: list[Node], timeout: float
) -> tuple[list[dict[str, Any]], list[str]]:
    """Poll until every live node's free resources equal its totals, its running
    set is empty and only live nodes are registered; returns what still differs
    and the node ids registered but not alive (dead, not reaped)."""
    live_ids = {n.node_id for n in live}
    deadline = time.monotonic() + timeout
    while True:
        leaks: list[dict[str, Any]] = []
        registered: dict[bytes, bytes] = client.hgetall(keys.nodes)  # type: ignore[assignment]
        unreaped = sorted(k.decode() for k in registered if k.decode() not in live_ids)
        for node_id in sorted(live_ids):
            raw = registered.get(node_id.encode())
            if raw is None:
                leaks.append({"node": node_id, "problem": "live node not registered"})
                continue
            totals = {str(k): int(v) for k, v in json.loads(raw)["totals"].items()}
            avail_raw: dict[bytes, bytes] = client.hgetall(keys.node_avail(node_id))  # type: ignore[assignment]
            avail = {k.decode(): int(v) for k, v in avail_raw.items()}
            running = sorted(k.decode() for k in client.hkeys(keys.node_running(node_id)))  # type: ignore[union-attr]
            if avail != totals or running:
                leaks.append(
                    {"node": node_id, "avail": avail, "totals": totals, "running": running[:20]}
                )
        if (not leaks and not unreaped) or time.monotonic() > deadline:
            return leaks, unreaped
        time.sleep(0.25)


def soak(args: argparse.Namespace, workdir: Path, cleanup: list[Any]) -> dict[str, Any]:
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"unknown kinds {bad}: choose among {','.join(KINDS)}")
    if args.duration <= 0 or args.kill_rate <= 0:
        kinds = []
    run_dir = workdir / "runs"
    for sub in ("runs", "logs", "redis"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)

    server = PersistentServer(str(workdir / "redis"), args.server_binary)
    server.start()
    cleanup.append(("server", server))
    settings = Settings(host="127.0.0.1", port=server.port)
    keys = Keys(settings.prefix)
    url = settings.to_url()
    log(f"server on {url} (AOF, appendfsync always) in {server.directory}")

    config = {"node_timeout": args.node_timeout, "job_timeout": args.job_timeout}
    nodes: list[Node] = []
    cleanup.append(("nodes", nodes))

    def start_new_node() -> Node:
        node = start_node(settings, workdir, args.cpus, config)
        nodes.append(node)
        return node

    for _ in range(args.nodes):
        start_new_node()
    log(f"{args.nodes} nodes of {args.cpus} CPUs up: {[n.node_id for n in nodes]}")

    client = settings.client()
    cleanup.append(("client", client))

    notices = _count_notices()
    ray.init(address=url)
    cleanup.append(("driver", None))

    t0 = time.monotonic()
    chaos = Chaos(args, kinds or ["executor"], server, nodes, start_new_node, t0)
    cleanup.append(("chaos", chaos))

    # submit everything before the chaos starts: a .remote() that fails while
    # Redis is down may or may not have queued its task, which would blur the count
    fn = work.options(max_retries=args.max_retries)
    refs: list[Any] = []
    for start in range(0, args.tasks, args.batch):
        for i in range(start, min(start + args.batch, args.tasks)):
            refs.append(fn.remote(i, str(run_dir), args.task_seconds))
        ray.wait(refs[-1:], timeout=0)  # sends the batch
    submitted = time.monotonic()
    log(f"submitted {args.tasks} tasks in {submitted - t0:.1f} s")
    if kinds:
        chaos.thread.start()
        log(
            f"chaos: {args.duration} s of {','.join(kinds)} at {args.kill_rate}/s, seed {args.seed}"
        )

    index = {ref.hex(): i for i, ref in enumerate(refs)}
    task_ids = [ref.task_id() for ref in refs]
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    pending = list(refs)
    del refs
    driver_retries = 0
    last_report = time.monotonic()
    deadline = submitted + args.duration + args.grace
    timed_out = stalled = False
    last_progress = time.monotonic()
    while pending:
        now = time.monotonic()
        if now > deadline:
            timed_out = True
            break
        if now - last_report >= 5:
            last_report = now
            log(f"{len(results) + len(errors)}/{args.tasks} done, kills {dict(chaos.kills)}")
            if (
                args.stall > 0
                and not chaos.thread.is_alive()
                and now - last_progress > args.stall
                and len(pending) <= 1000
                and _settled(client, keys, [r.task_id() for r in pending])
            ):
                # every missing task is finished (or forgotten) in Redis and the
                # inbox is empty: its notice can no longer come
                stalled = True
                log(f"stalled: {len(pending)} tasks finished in Redis but never notified")
                break
        try:
            ready, pending = ray.wait(
                pending, num_returns=min(args.batch, len(pending)), timeout=1.0
            )
        except (ConnectionError, redis.RedisError):
            driver_retries += 1
            time.sleep(0.2)
            continue
        if not ready:
            continue
        got = _get_all(ready, errors, index)
        if got is None:  # Redis went away mid-get: try these again
            driver_retries += 1
            pending = ready + pending
            time.sleep(0.2)
            continue
        for ref, value in got:
            results[index[ref.hex()]] = value
        last_progress = time.monotonic()
        del ready, got
    collected = time.monotonic()
    chaos.stop.set()
    if chaos.thread.is_alive():
        chaos.thread.join(120)
    # wait out a restart the chaos thread may be in the middle of
    with chaos.lock:
        pass
    log(f"collection ended after {collected - t0:.1f} s ({len(results)} results)")

    missing = sorted(set(range(args.tasks)) - set(results) - set(errors))
    runs = read_runs(run_dir)
    runs_of: dict[int, list[tuple[int, str, float]]] = collections.defaultdict(list)
    for i, pid, node_id, t in runs:
        runs_of[i].append((pid, node_id, t))
    pending_by_index = {index[r.hex()]: r for r in pending}
    diagnosis = []
    for n, i in enumerate(missing[:50]):
        tid = task_ids[i]
        oid = next(o for o, j in index.items() if j == i)
        state = retrying(lambda t=tid: client.hget(keys.task_state, t), "diagnose")
        times = [t for _, _, t in runs_of[i] if t]
        near = []
        if times:
            lo, hi = min(times) - 2, max(times) + args.task_seconds + 10
            near = [
                {"kind": e["kind"], "dt": round(e["unix"] - max(times), 3), "t": e["t"]}
                for e in chaos.events
                if lo <= e["unix"] <= hi
            ]
        get_outcome = None
        ref = pending_by_index.get(i)
        if ref is not None and n < 10:
            try:
                get_outcome = f"value {ray.get(ref, timeout=1)!r}"
            except ray.exceptions.GetTimeoutError:
                get_outcome = "get timed out (hangs)"
            except Exception as exc:  # noqa: BLE001
                get_outcome = f"{type(exc).__name__}: {str(exc)[:200]}"
        diagnosis.append(
            {
                "task": i,
                "task_id": tid,
                "object_id": oid,
                "state": state.decode(errors="replace") if state else None,
                "has_spec": bool(retrying(lambda t=tid: client.hexists(keys.task_spec, t), "d")),
                "object_exists": bool(retrying(lambda o=oid: client.exists(keys.obj(o)), "d")),
                "notices": notices.get(oid, 0),
                "runs": [
                    {"pid": pid, "node": node_id, "unix": t} for pid, node_id, t in runs_of[i]
                ],
                "kills_near_last_run": near,
                "get_1s": get_outcome,
            }
        )
    del pending, pending_by_index

    wrong = sorted(i for i, v in results.items() if v != 10 * i)
    runs_per_task = collections.Counter(i for i, _, _, _ in runs)
    never_ran = sorted(set(range(args.tasks)) - set(runs_per_task))
    distribution = collections.Counter(runs_per_task[i] for i in range(args.tasks))
    ours = set(index)
    duplicates = {o: n for o, n in notices.items() if o in ours and n > 1}
    no_notice = [o for o in ours if notices.get(o, 0) == 0 and index[o] in results]

    live = [n for n in nodes if not n.killed and n.alive()]
    if missing:
        leaks, unreaped = check_reservations(client, keys, live, timeout=5)
    else:
        leaks, unreaped = check_reservations(client, keys, live, timeout=3 * args.node_timeout + 30)

    ray.shutdown()
    cleanup.remove(("driver", None))
    for node in live:
        node.stop()
    # the server was empty before the nodes came: with the job and every node
    # gone, only the cluster-lifetime keys may be left
    allowed = {f"{keys.tag}:{name}" for name in CLUSTER_LIFETIME}
    settle = time.monotonic() + 30
    while True:
        leftover = cluster_keys(client, keys) - allowed
        # a job's output is kept a while on purpose, and expires
        leftover = {k for k in leftover if not (k.endswith(":logs") and client.ttl(k) > 0)}
        if not leftover or time.monotonic() > settle:
            break
        time.sleep(0.25)

    pgids = {n.pgid for n in nodes}
    stragglers = []
    for proc in psutil.process_iter(["pid", "name"]):
        try:
            if proc.pid != os.getpid() and os.getpgid(proc.pid) in pgids:
                if proc.status() != psutil.STATUS_ZOMBIE:
                    stragglers.append({"pid": proc.pid, "name": proc.info["name"]})
        except (ProcessLookupError, psutil.Error):
            pass

    elapsed = collected - t0
    done = len(results) + len(errors)
    # up to the last result, not the wait for missing ones
    busy = last_progress - t0
    report: dict[str, Any] = {
        "tasks": args.tasks,
        "task_seconds": args.task_seconds,
        "nodes": args.nodes,
        "cpus_per_node": args.cpus,
        "seed": args.seed,
        "kinds": kinds,
        "kill_rate": args.kill_rate,
        "duration": args.duration,
        "chaos_seconds": round((chaos.ended or chaos.started) - chaos.started, 3)
        if chaos.started
        else 0.0,
        "max_retries": args.max_retries,
        "node_config": config,
        "kills": {k: chaos.kills.get(k, 0) for k in KINDS},
        "kill_log": chaos.events,
        "chaos_errors": chaos.errors,
        "redis_restart_seconds": chaos.redis_restart_seconds,
        "nodes_started": len(nodes),
        "timed_out": timed_out,
        "stalled": stalled,
        "results": len(results),
        "lost": len(missing),
        "lost_ids": missing[:1000],
        "lost_diagnosis": diagnosis,
        "wrong": len(wrong) + len(errors),
        "wrong_values": {str(i): repr(results[i])[:200] for i in wrong[:100]},
        "errors": {str(i): e for i, e in list(errors.items())[:100]},
        "never_ran": len(never_ran),
        "never_ran_ids": never_ran[:1000],
        "runs_total": len(runs),
        "runs_per_task": {str(k): v for k, v in sorted(distribution.items())},
        "reruns": sum(max(0, runs_per_task[i] - 1) for i in range(args.tasks)),
        "duplicate_notices": len(duplicates),
        "duplicate_notice_objects": dict(list(duplicates.items())[:100]),
        "results_without_notice": len(no_notice),
        "leaked_reservations": leaks,
        "unreaped_nodes": unreaped,
        "leftover_keys": sorted(leftover),
        "leftover_processes": stragglers,
        "driver_retries": driver_retries,
        "submit_seconds": round(submitted - t0, 3),
        "elapsed": round(elapsed, 3),
        "last_result_seconds": round(busy, 3),
        "throughput": round(done / busy, 1) if busy > 0 else 0.0,
        "workdir": str(workdir),
    }
    report["passed"] = (
        report["lost"] == 0
        and report["wrong"] == 0
        and report["duplicate_notices"] == 0
        and not leaks
        and not unreaped
        and not leftover
    )
    return report


def _driver_inbox() -> str | None:
    """The Redis list this driver's completion notices arrive in (internal: re-point
    it with ``_count_notices`` when the runtime changes); None if unknown."""
    try:
        return str(ray.api.current_runtime().inbox)
    except Exception:  # noqa: BLE001
        return None


def _settled(client: redis.Redis, keys: Keys, task_ids: list[str]) -> bool:
    """No pending task is known to the scheduler any more and no notice waits
    for the driver: nothing more can arrive."""
    try:
        with client.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.hexists(keys.task_state, tid)
                pipe.hexists(keys.task_spec, tid)
            inbox = _driver_inbox()
            if inbox is not None:
                pipe.llen(inbox)
            replies = pipe.execute()
    except redis.RedisError:
        return False
    if inbox is not None and replies.pop():
        return False
    return not any(replies)


def _get_all(ready: list[Any], errors: dict[int, str], index: dict[str, int]) -> Any:
    """Values of ready refs as (ref, value); a task's error goes to ``errors``.
    None if Redis went away meanwhile."""
    try:
        return list(zip(ready, ray.get(ready, timeout=60)))
    except (ConnectionError, redis.RedisError, ray.exceptions.GetTimeoutError):
        return None
    except Exception:  # noqa: BLE001 - some failed: one at a time
        pass
    out = []
    for ref in ready:
        try:
            out.append((ref, ray.get(ref, timeout=60)))
        except (ConnectionError, redis.RedisError, ray.exceptions.GetTimeoutError):
            return None
        except Exception as exc:  # noqa: BLE001 - a task's error is a wrong result
            errors[index[ref.hex()]] = f"{type(exc).__name__}: {str(exc)[:300]}"
    return out


def cleanup_all(cleanup: list[Any]) -> None:
    for what, obj in reversed(cleanup):
        try:
            if what == "chaos":
                obj.stop.set()
                if obj.thread.is_alive():
                    obj.thread.join(60)
            elif what == "driver":
                ray.shutdown()
            elif what == "client":
                obj.close()
            elif what == "nodes":
                for node in obj:
                    if not node.killed and node.alive():
                        node.stop(timeout=10)
                    try:  # anything left in its process group
                        os.killpg(node.pgid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            elif what == "server":
                obj.stop()
        except BaseException as exc:  # noqa: BLE001 - clean up the rest regardless
            print(f"cleanup of {what} failed: {exc!r}", file=sys.stderr)


def print_summary(r: dict[str, Any]) -> None:
    print()
    print("=" * 72)
    print(
        f"chaos soak: {r['tasks']} tasks x {r['task_seconds']} s on {r['nodes']} nodes x "
        f"{r['cpus_per_node']} CPUs, seed {r['seed']}"
    )
    print(
        f"chaos: {r['chaos_seconds']} s of {','.join(r['kinds']) or 'none'}; kills {r['kills']}; "
        f"nodes started {r['nodes_started']}; redis restarts took {r['redis_restart_seconds']}"
    )
    if r["chaos_errors"]:
        print(f"chaos errors: {r['chaos_errors'][:5]}")
    print(
        f"elapsed {r['elapsed']} s (submit {r['submit_seconds']} s, last result at "
        f"{r['last_result_seconds']} s), throughput {r['throughput']} tasks/s, "
        f"driver retries {r['driver_retries']}"
    )
    why = "  (DEADLINE PASSED)" if r["timed_out"] else "  (STALLED)" if r["stalled"] else ""
    print(f"results {r['results']}/{r['tasks']}{why}")
    print(f"lost               {r['lost']}  {r['lost_ids'][:20] if r['lost'] else ''}")
    print(f"wrong              {r['wrong']}  {list(r['errors'].items())[:3] or ''}")
    print(
        f"never ran          {r['never_ran']}  {r['never_ran_ids'][:20] if r['never_ran'] else ''}"
    )
    print(f"runs per task      {r['runs_per_task']} (re-runs {r['reruns']})")
    print(f"duplicate notices  {r['duplicate_notices']}")
    print(f"results w/o notice {r['results_without_notice']}")
    print(f"leaked reservations {r['leaked_reservations'] or 0}")
    print(f"unreaped nodes     {r['unreaped_nodes'] or 0}")
    print(f"leftover keys      {r['leftover_keys'] or 0}")
    print(f"leftover processes {r['leftover_processes'] or 0}")
    for d in r["lost_diagnosis"][:10]:
        print(f"  lost {d}")
    print("PASSED" if r["passed"] else "FAILED")
    print("=" * 72)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--task-seconds", type=float, default=0.02)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--cpus", type=float, default=2, help="CPUs per node")
    p.add_argument("--duration", type=float, default=90, help="seconds of chaos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kill-rate", type=float, default=1.0, help="mean kills per second")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma list of executor,node,redis")
    p.add_argument("--server-binary", default=None, help="redis-server/valkey-server to use")
    p.add_argument("--json", default=None, help="write every figure here")
    p.add_argument("--workdir", default=None, help="scratch directory (kept afterwards)")
    p.add_argument("--grace", type=float, default=300, help="seconds to wait after the chaos")
    p.add_argument(
        "--stall",
        type=float,
        default=60,
        help="after the chaos, give up once no result came for this long and every "
        "missing task is finished in Redis with no notice waiting (0: wait out --grace)",
    )
    p.add_argument("--batch", type=int, default=1000, help="tasks per submit / collect batch")
    p.add_argument("--max-retries", type=int, default=-1, help="max_retries of every task")
    p.add_argument("--node-timeout", type=float, default=5.0)
    p.add_argument("--job-timeout", type=float, default=10.0)
    p.add_argument("--redis-down", type=float, default=0.5, help="seconds Redis stays down")
    args = p.parse_args(argv)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    keep = args.workdir is not None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="redray-chaos-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cleanup: list[Any] = []
    report: dict[str, Any] | None = None
    try:
        report = soak(args, workdir, cleanup)
    except KeyboardInterrupt:
        print("interrupted: cleaning up", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - a harness error, not a finding
        traceback.print_exc()
        return 2
    finally:
        cleanup_all(cleanup)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print_summary(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
