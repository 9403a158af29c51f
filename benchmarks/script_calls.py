"""Redis round trips per task: script calls and commands per task, by executor count.

    .venv/bin/python benchmarks/script_calls.py
    .venv/bin/python benchmarks/script_calls.py --executors 1,8,16 --tasks 5000 \\
        --sync-tasks 500 --json script_calls.json
    .venv/bin/python benchmarks/script_calls.py --server-binary /usr/bin/redis-server --check

It starts its own Redis-compatible server on a free loopback port (never 6379)
and, for each executor count, one worker node with exactly that many executors
(``min_executors == max_executors``) and ``--num-cpus`` CPUs, connects a driver,
warms up, measures the idle cluster for ``--idle`` seconds (script calls and
commands per second with no task to run), and reads the server's
``INFO commandstats`` before and after

* the batch phase: ``--tasks`` noop tasks submitted at once, then one ``get``
  of them all (the throughput path), and
* the sync phase: ``--sync-tasks`` noop tasks, each submitted and then got
  before the next one (the latency path; tasks/s is 1 / latency).

Everything the cluster sends to the server during a phase is counted, the idle
executors' and the node agent's commands included, from the first submit to
``--drain`` seconds after the last ``get`` (the driver frees dropped refs in
batches, up to a heartbeat later, so each phase pays for freeing its own
objects; the drain window's idle traffic is small, see the idle line), and
divided by the number of tasks: script calls (``EVALSHA``, ``EVALSHA_RO``, ``EVAL``, ``EVAL_RO``,
``FCALL``, ``FCALL_RO``) and all commands (a pipeline counts each command in
it, and so does every command a script runs; the benchmark's own ``INFO``
probes are left out). tasks/s is wall clock from the first submit to the
last ``get`` returning (the drain is not timed). The JSON also has the
server's socket reads per task (``total_reads_processed``, close to the
number of round trips) and the calls per command.

``--by-script`` also runs ``MONITOR`` during the phases and reports, per task,
the calls of each Lua script (named after its file in ``redray/lua``) and the
commands clients sent apart from those the scripts ran. MONITOR slows the
server, so throughput with it is not comparable (it is marked in the table).

The target: at most 3 script calls per task with 1, 8 and 16 executors on one
node, in both phases -- i.e. the number of executors waiting for work must not
multiply the scripts a task costs. ``--check`` exits with status 1 when a
measured value is above ``--target`` (default 3).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import redis

import redray as ray
from redray.constants import Keys
from redray.node_launch import module_command
from redray.server import ServerProcess, start_server
from redray.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent

#: commandstats names that run a server-side script
SCRIPT_COMMANDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro")


@ray.remote
def noop() -> None:
    return None


# -- commandstats ---------------------------------------------------------------------------
class Probe:
    """One ``INFO commandstats`` (and, where the server takes several sections,
    ``stats``) reading: calls per command and socket reads since the start."""

    multi_section = True

    def __init__(self, client: redis.Redis) -> None:
        stats: dict[str, Any] = {}
        if Probe.multi_section:
            try:
                stats = client.info("commandstats", "stats")
            except redis.ResponseError:  # a server before Redis 7: one section per INFO
                Probe.multi_section = False
        if not Probe.multi_section:
            stats = client.info("commandstats")
        self.calls: dict[str, int] = {}
        for key, value in stats.items():
            name = str(key)
            if name.startswith("cmdstat_") and isinstance(value, dict):
                self.calls[name[len("cmdstat_") :].lower()] = int(value.get("calls", 0))
        reads = stats.get("total_reads_processed")
        self.reads: int | None = int(reads) if reads is not None else None


def calls_between(before: Probe, after: Probe) -> dict[str, int]:
    """Commands run between two probes, less the second probe's own ``INFO``
    (the first probe is counted in ``before``, the second is not yet in
    ``after``, so exactly one INFO of ours lies between them)."""
    delta = {name: n - before.calls.get(name, 0) for name, n in after.calls.items()}
    if delta.get("info", 0) > 0:
        delta["info"] -= 1
    return {name: n for name, n in sorted(delta.items()) if n > 0}


def summarize(before: Probe, after: Probe, tasks: int, seconds: float) -> dict[str, Any]:
    delta = calls_between(before, after)
    scripts = sum(delta.get(name, 0) for name in SCRIPT_COMMANDS)
    commands = sum(delta.values())
    reads = None
    if before.reads is not None and after.reads is not None:
        reads = after.reads - before.reads - 1  # the second probe's own read
    return {
        "tasks": tasks,
        "seconds": seconds,
        "tasks_per_s": tasks / seconds if seconds > 0 else float("inf"),
        "script_calls": scripts,
        "script_calls_per_task": scripts / tasks,
        "commands": commands,
        "commands_per_task": commands / tasks,
        "socket_reads_per_task": reads / tasks if reads is not None else None,
        "by_command": delta,
    }


# -- MONITOR (--by-script) -------------------------------------------------------------------
def script_names() -> dict[str, str]:
    """SHA1 -> script name for the Lua files redray ships (what EVALSHA names)."""
    names: dict[str, str] = {}
    try:
        for entry in resources.files("redray.lua").iterdir():
            if entry.name.endswith(".lua"):
                sha = hashlib.sha1(entry.read_text().encode()).hexdigest()
                names[sha] = entry.name[: -len(".lua")]
    except (ModuleNotFoundError, OSError):
        pass
    return names


class Monitor:
    """A raw MONITOR connection whose output is kept between two ECHO markers.

    The reader thread only appends what ``recv`` returns (it releases the GIL),
    so the driver in this process is not slowed by parsing; lines are parsed
    once the phase is over.
    """

    def __init__(self, host: str, port: int) -> None:
        tag = uuid.uuid4().hex
        self.begin = f"redray-bench-begin-{tag}".encode()
        self.end = f"redray-bench-end-{tag}".encode()
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(b"MONITOR\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = self.sock.recv(64)
            if not chunk:
                raise RuntimeError("MONITOR connection closed")
            reply += chunk
        if not reply.startswith(b"+OK"):
            raise RuntimeError(f"MONITOR refused: {reply!r}")
        self.chunks: list[bytes] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        tail = b""
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    return
                self.chunks.append(data)
                if self.end in tail + data:
                    return
                tail = data[-len(self.end) :]
        except OSError:
            return
        finally:
            self.done.set()

    def mark_begin(self, client: redis.Redis) -> None:
        client.echo(self.begin.decode())

    def finish(self, client: redis.Redis, timeout: float = 60.0) -> list[bytes]:
        """Lines between the markers (after the server has fed us everything)."""
        client.echo(self.end.decode())
        self.done.wait(timeout)
        self.close()
        data = b"".join(self.chunks)
        start = data.find(self.begin)
        stop = data.find(self.end)
        if start < 0 or stop < 0:
            raise RuntimeError("MONITOR output lacks its markers")
        first = data.find(b"\r\n", start) + 2
        last = data.rfind(b"\r\n", 0, stop)
        return data[first:last].split(b"\r\n") if last > first else []

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def parse_monitor(lines: list[bytes], names: dict[str, str], tasks: int) -> dict[str, Any]:
    """Per task: calls of each script, commands sent by clients, commands run by scripts."""
    scripts: dict[str, int] = {}
    client_commands = 0
    script_commands = 0
    for line in lines:
        bracket = line.find(b'] "')
        if bracket < 0:
            continue
        origin = line[line.find(b"[") + 1 : bracket]
        rest = line[bracket + 3 :]
        quote = rest.find(b'"')
        command = rest[:quote].decode(errors="replace").lower()
        if origin.endswith(b" lua"):
            script_commands += 1
            continue
        if command == "info" and rest[quote:].startswith(b'" "commandstats"'):
            continue  # our own probes
        client_commands += 1
        if command in ("evalsha", "evalsha_ro", "fcall", "fcall_ro"):
            raw = rest[quote + 3 :]
            arg = raw[: raw.find(b'"')].decode(errors="replace")
            name = names.get(arg.lower(), arg[:12]) if command.startswith("evalsha") else arg
            scripts[name] = scripts.get(name, 0) + 1
        elif command in ("eval", "eval_ro"):
            scripts["(eval)"] = scripts.get("(eval)", 0) + 1
    return {
        "client_commands_per_task": client_commands / tasks,
        "in_script_commands_per_task": script_commands / tasks,
        "script_calls_per_task": {
            name: n / tasks for name, n in sorted(scripts.items(), key=lambda kv: -kv[1])
        },
    }


# -- processes -------------------------------------------------------------------------------
def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(BENCH_DIR), str(REPO_ROOT)]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_node(
    settings: Settings, executors: int, num_cpus: float, timeout: float = 60.0
) -> subprocess.Popen[bytes]:
    """A node agent with exactly ``executors`` executors, in its own process group,
    returned once it has pushed its ready marker."""
    node_id = uuid.uuid4().hex[:16]
    config = {
        "address": settings.to_url(),
        "num_cpus": num_cpus,
        "node_id": node_id,
        "min_executors": executors,
        "max_executors": executors,
    }
    cmd = module_command("redray.workers.node", json.dumps(config))
    proc = subprocess.Popen(cmd, env=worker_env(), start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        client = settings.client(blocking=True)
        key = Keys(settings.prefix).node_ready(node_id)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if client.blpop([key], timeout=0.5) is not None:
                    client.delete(key)
                    return proc
                if proc.poll() is not None:
                    raise RuntimeError(f"node exited with code {proc.returncode} at start")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"node did not start in {timeout} s")
        finally:
            client.close()
    except BaseException:
        stop_node(proc)
        raise


def stop_node(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the node's process group (agent and executors), SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    # executors of a stopped agent exit on their own (PDEATHSIG); whatever of the
    # group is still there after a grace period is killed
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and group_alive(proc.pid):
        time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(5)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_settled(
    client: redis.Redis, min_clients: int, settle: float, timeout: float = 60.0
) -> int:
    """Wait until at least ``min_clients`` are connected and the count has not
    changed for ``settle`` seconds; returns the count."""
    deadline = time.monotonic() + timeout
    last = -1
    since = time.monotonic()
    while True:
        now = time.monotonic()
        count = int(client.info("clients")["connected_clients"])
        if count != last:
            last, since = count, now
        elif count >= min_clients and now - since >= settle:
            return count
        if now > deadline:
            print(
                f"warning: {count} clients connected after {timeout} s (wanted {min_clients})",
                file=sys.stderr,
            )
            return count
        time.sleep(0.1)


# -- phases --------------------------------------------------------------------------------
def batch_tasks(tasks: int) -> None:
    ray.get([noop.remote() for _ in range(tasks)])


def sync_tasks(tasks: int) -> None:
    for _ in range(tasks):
        ray.get(noop.remote())


def measure(
    client: redis.Redis,
    run: Any,
    tasks: int,
    drain: float,
    monitor_at: tuple[str, int] | None,
) -> dict[str, Any]:
    """Count what the cluster sends while ``run(tasks)`` runs, and for ``drain``
    seconds after (the driver frees dropped refs in batches, up to a heartbeat
    later: each phase pays for freeing its own objects, not the last one's)."""
    gc.collect()
    time.sleep(drain)  # the previous phase's (or the warm-up's) frees are out
    monitor = Monitor(*monitor_at) if monitor_at is not None else None
    try:
        if monitor is not None:
            monitor.mark_begin(client)
        before = Probe(client)
        t0 = time.perf_counter()
        run(tasks)
        seconds = time.perf_counter() - t0
        gc.collect()
        time.sleep(drain)
        after = Probe(client)
        result = summarize(before, after, tasks, seconds)
        result["window_seconds"] = time.perf_counter() - t0
        if monitor is not None:
            lines = monitor.finish(client)
            result["monitored"] = parse_monitor(lines, script_names(), tasks)
        return result
    finally:
        if monitor is not None:
            monitor.close()


def idle_rates(client: redis.Redis, seconds: float) -> dict[str, Any]:
    """What the connected cluster sends per second with no task to run."""
    before = Probe(client)
    t0 = time.perf_counter()
    time.sleep(seconds)
    after = Probe(client)
    elapsed = time.perf_counter() - t0
    delta = calls_between(before, after)
    scripts = sum(delta.get(name, 0) for name in SCRIPT_COMMANDS)
    return {
        "seconds": elapsed,
        "script_calls_per_s": scripts / elapsed,
        "commands_per_s": sum(delta.values()) / elapsed,
        "by_command": delta,
    }


def run_one(
    settings: Settings, client: redis.Redis, executors: int, args: argparse.Namespace
) -> dict[str, Any]:
    baseline = int(client.info("clients")["connected_clients"])
    node = start_node(settings, executors, args.num_cpus)
    try:
        # the agent pushes its ready marker right after forking the executors;
        # wait until every one of them has connected and the count is stable
        time.sleep(1.0)
        wait_settled(client, baseline + executors, args.settle)
        ray.init(address=settings.to_url())
        try:
            ray.get([noop.remote() for _ in range(args.warmup)])
            for _ in range(min(args.warmup, 50)):
                ray.get(noop.remote())
            clients = wait_settled(client, 0, min(args.settle, 0.5))
            idle = idle_rates(client, args.idle) if args.idle > 0 else None
            monitor_at = (settings.host, settings.port) if args.by_script else None
            batch = measure(client, batch_tasks, args.tasks, args.drain, monitor_at)
            sync = None
            if args.sync_tasks > 0:
                sync = measure(client, sync_tasks, args.sync_tasks, args.drain, monitor_at)
            if idle is not None:
                # heartbeats and reapers call scripts a few times a second
                # whatever runs: their share of the window is not the tasks'
                for phase in (batch, sync):
                    if phase is not None:
                        background = idle["script_calls_per_s"] * phase["window_seconds"]
                        phase["task_script_calls_per_task"] = max(
                            0.0, (phase["script_calls"] - background) / phase["tasks"]
                        )
        finally:
            ray.shutdown()
    finally:
        stop_node(node)
        client.flushall()
    return {
        "executors": executors,
        "num_cpus": args.num_cpus,
        "connected_clients": clients,
        "idle": idle,
        "batch": batch,
        "sync": sync,
    }


# -- output --------------------------------------------------------------------------------
def net_per_task(phase: dict[str, Any]) -> float:
    """A phase's script calls per task, less the idle cluster's own, to the
    two decimals the table shows: the idle share is an estimate (rate times
    window) of calls that land in a window in whole numbers, a few either
    way, i.e. about 0.01 per task at 500 tasks. Judged to more places, an
    exact 3 per task read as 3.002 and failed."""
    value: float = phase.get("task_script_calls_per_task", phase["script_calls_per_task"])
    return round(value, 2)


def print_table(results: list[dict[str, Any]], target: float, top: int) -> None:
    monitored = any(r["batch"].get("monitored") for r in results)
    header = (
        f"{'executors':>9}  {'batch tasks/s':>13} {'scripts/task':>12} {'cmds/task':>9}"
        f"  {'sync tasks/s':>12} {'scripts/task':>12} {'cmds/task':>9}  scripts<={target:g}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        b, s = r["batch"], r["sync"]
        met = net_per_task(b) <= target and (s is None or net_per_task(s) <= target)
        sync_cols = (
            f"{s['tasks_per_s']:12.1f} {net_per_task(s):12.2f} {s['commands_per_task']:9.2f}"
            if s is not None
            else f"{'-':>12} {'-':>12} {'-':>9}"
        )
        print(
            f"{r['executors']:>9}  {b['tasks_per_s']:13.1f} {net_per_task(b):12.2f} "
            f"{b['commands_per_task']:9.2f}  {sync_cols}  {'yes' if met else 'NO'}"
        )
    print(
        "scripts/task: EVALSHA(_RO), EVAL(_RO), FCALL(_RO) per task, less the idle "
        "cluster's own (heartbeats, reapers: the idle line below) over the same window; "
        "cmds/task: every command, those run inside scripts included"
        + ("; tasks/s measured under MONITOR" if monitored else "")
    )
    for r in results:
        if r["idle"] is not None:
            print(
                f"  {r['executors']:>3} executors, idle: "
                f"{r['idle']['script_calls_per_s']:.1f} script calls/s, "
                f"{r['idle']['commands_per_s']:.1f} commands/s"
            )
    for r in results:
        for phase in ("batch", "sync"):
            p = r[phase]
            if p is None:
                continue
            label = f"  {r['executors']:>3} executors, {phase:5s}"
            m = p.get("monitored")
            if m is not None:
                per = ", ".join(f"{name} {n:.2f}" for name, n in m["script_calls_per_task"].items())
                print(
                    f"{label} per task: client cmds {m['client_commands_per_task']:.2f}, "
                    f"in-script cmds {m['in_script_commands_per_task']:.2f}; scripts: {per}"
                )
            if top > 0:
                busiest = sorted(p["by_command"].items(), key=lambda kv: -kv[1])[:top]
                per = ", ".join(f"{name} {n / p['tasks']:.2f}" for name, n in busiest)
                print(f"{label} busiest commands per task: {per}")


def parse_counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or any(n < 1 for n in counts):
        raise argparse.ArgumentTypeError("executor counts must be positive integers")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--executors", type=parse_counts, default=[1, 8, 16], help="comma-separated counts"
    )
    parser.add_argument("--tasks", type=int, default=5000, help="tasks in the batch phase")
    parser.add_argument("--sync-tasks", type=int, default=500, help="tasks in the sync phase")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up tasks per node")
    parser.add_argument("--num-cpus", type=float, default=2, help="CPUs the node advertises")
    parser.add_argument("--server-binary", help="redis-server/valkey-server to run")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds of stable clients")
    parser.add_argument(
        "--drain", type=float, default=1.5, help="seconds counted after a phase's last get"
    )
    parser.add_argument(
        "--idle", type=float, default=2.0, help="seconds to measure the idle cluster (0: skip)"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--target", type=float, default=3.0, help="script calls per task")
    parser.add_argument("--check", action="store_true", help="exit 1 if above the target")
    parser.add_argument("--top", type=int, default=0, help="show the N busiest commands")
    parser.add_argument(
        "--by-script", action="store_true", help="MONITOR the phases: calls per script"
    )
    args = parser.parse_args()
    if args.tasks < 1 or args.sync_tasks < 0 or args.warmup < 1:
        parser.error("--tasks and --warmup must be at least 1, --sync-tasks at least 0")

    # SIGTERM and SIGHUP end the run like Ctrl-C (also when started in the
    # background, where SIGINT is inherited ignored): the finally blocks stop
    # the node and the server. Only the first signal interrupts, so a second
    # Ctrl-C cannot cut that cleanup short.
    interrupted: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if not interrupted:
            interrupted.append(signum)
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    results: list[dict[str, Any]] = []
    server: ServerProcess | None = None
    client: redis.Redis | None = None
    try:
        server = start_server(binary=args.server_binary)
        if server.port == 6379:  # never a default port someone else may rely on
            raise RuntimeError("refusing to benchmark on port 6379")
        settings = Settings(host=server.host, port=server.port)
        client = settings.client()
        version = client.info("server")
        server_name = version.get("server_name", "redis")
        server_version = version.get("valkey_version") or version.get("redis_version")
        print(f"server: {server_name} {server_version} on {server.host}:{server.port}", flush=True)
        client.flushall()
        for executors in args.executors:
            results.append(run_one(settings, client, executors, args))
            r = results[-1]
            print(
                f"  {executors} executors: batch {r['batch']['script_calls_per_task']:.2f} "
                f"scripts/task, {r['batch']['tasks_per_s']:.0f} tasks/s",
                file=sys.stderr,
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if client is not None:
            client.close()
        if server is not None:
            server.stop()

    print_table(results, args.target, args.top)
    if args.json:
        payload = {
            "server": f"{server_name} {server_version}",
            "target_script_calls_per_task": args.target,
            "tasks": args.tasks,
            "sync_tasks": args.sync_tasks,
            "num_cpus": args.num_cpus,
            "results": results,
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=2)
    if args.check:
        for r in results:
            for phase in ("batch", "sync"):
                if r[phase] is not None and net_per_task(r[phase]) > args.target:
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
