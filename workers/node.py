"""The node agent: advertises a machine's resources and keeps its executors.

It registers the node (totals, free resources, GPU ids) in Redis, heartbeats,
forks a pool of executors, starts another when every executor is busy and the
node still has room (a task blocked in ``get`` gave its CPU back), replaces an
executor that crashed (re-queueing its task within its retry budget), and on
stop removes everything it registered.

Run it with ``redray worker --address redis://...`` or, for the embedded
cluster, ``python -m redray.workers.node '<json config>'``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis

from redray import ids
from redray.constants import Keys
from redray.resources import node_totals
from redray.runtime import Runtime
from redray.settings import Settings

from . import slots as sl
from .executor import executor_main
from .memory import CHECK_INTERVAL, MemoryMonitor, floor_bytes, format_bytes

log = logging.getLogger("redray.node")

HEARTBEAT_INTERVAL = 1.0
#: Actor processes one node may host.
MAX_ACTORS = 1000


@dataclass
class NodeConfig:
    address: str
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: dict[str, float] = field(default_factory=dict)
    node_id: str | None = None
    min_executors: int | None = None
    max_executors: int | None = None
    #: idle seconds before an executor above the minimum is stopped
    idle_timeout: float = 30.0
    #: seconds without a driver heartbeat after which its job is cleaned up
    job_timeout: float = 10.0
    #: seconds without a node heartbeat after which its work is taken over
    node_timeout: float = 10.0
    #: embedded mode: the driver that started this node, and its private server;
    #: if the driver dies without shutdown(), the node stops both
    owner_pid: int | None = None
    server_pid: int | None = None
    server_dir: str | None = None
    #: take no new work while the machine has less memory available than this:
    #: bytes, or a fraction of its memory when at most 1 (None: 5%)
    min_free_memory: float | None = None


class Exited(NamedTuple):
    """An executor that exited, with what it held (kept until Redis has heard)."""

    state: int
    task_id: str
    actor_id: str
    worker_id: str
    status: int
    #: (bytes used, bytes allowed) when the agent killed it for memory
    memory: tuple[int, int] | None


class NodeAgent:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.settings = Settings.from_url(config.address)
        self.keys = Keys(self.settings.prefix)
        self.node_id = config.node_id or ids.random_id(14)
        self.totals, self.gpu_ids = node_totals(config.num_cpus, config.num_gpus, config.resources)
        cpus = self.totals["CPU"] // 10_000
        self.min_executors = config.min_executors or max(1, cpus)
        self.max_executors = config.max_executors or max(32, 4 * self.min_executors)
        # actors hold a slot each for their whole life, beyond the task executors
        self.slots = sl.Slots(self.max_executors + MAX_ACTORS)
        self.pids: dict[int, tuple[int, str]] = {}  # pid -> (slot, worker id)
        self.orphans: list[Exited] = []
        self.memory = MemoryMonitor(self.slots, floor_bytes(config.min_free_memory))
        self.idle_since: dict[int, float] = {}
        self.client = self.settings.client()
        self.stopping = False
        self._runtime: Runtime | None = None
        self._owner_started = _create_time(config.owner_pid)
        self.agent_pid = os.getpid()

    # -- registration ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        hostname = socket.gethostname()
        try:
            ip = socket.gethostbyname(hostname)
        except OSError:
            ip = "127.0.0.1"
        return {
            "node_id": self.node_id,
            "hostname": hostname,
            "ip": ip,
            "pid": os.getpid(),
            "totals": self.totals,
            "gpu_ids": self.gpu_ids,
            "started": time.time(),
        }

    def register(self) -> None:
        k = self.keys
        nid = self.node_id
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(k.node_avail(nid), k.node_gpus(nid), k.node_running(nid))
            pipe.hset(k.node_avail(nid), mapping=dict(self.totals))  # type: ignore[arg-type]
            if self.gpu_ids:
                pipe.hset(k.node_gpus(nid), mapping={g: 10_000 for g in self.gpu_ids})
            pipe.hset(k.nodes, nid, json.dumps(self.info()))
            pipe.zadd(k.heartbeats, {nid: time.time()})
            pipe.execute()

    def deregister(self) -> None:
        k = self.keys
        nid = self.node_id
        with self.client.pipeline(transaction=True) as pipe:
            pipe.hdel(k.nodes, nid)
            pipe.zrem(k.heartbeats, nid)
            pipe.delete(k.node_avail(nid), k.node_gpus(nid), k.node_running(nid), k.node_ready(nid))
            pipe.execute()

    # -- executors -----------------------------------------------------------------------
    def spawn(self) -> int | None:
        slot = self.slots.free_slot()
        if slot is None:
            return None
        worker_id = ids.random_id(10)
        self.slots.set_state(slot, sl.STARTING)
        self.slots.set_task(slot, "")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 0
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _exit_with_parent(self.agent_pid)
                executor_main(self.settings, self.node_id, worker_id, self.totals, self.slots, slot)
            except BaseException:  # noqa: BLE001
                log.exception("executor crashed")
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pids[pid] = (slot, worker_id)
        return pid

    def runtime(self) -> Runtime:
        if self._runtime is None:
            self._runtime = Runtime(
                self.settings, job_id="", worker_id="node-" + self.node_id, node_id=self.node_id
            )
        return self._runtime

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            entry = self.pids.pop(pid, None)
            if entry is None:
                continue
            slot, worker_id = entry
            exited = Exited(
                self.slots.state(slot),
                self.slots.task(slot),
                self.slots.actor(slot),
                worker_id,
                status,
                self.memory.exited(pid),
            )
            self.slots.set_state(slot, sl.FREE)
            self.slots.set_memory_limit(slot, 0)
            # kept until done: Redis may be down right now
            self.orphans.append(exited)
        self.recover_orphans()

    def recover_orphans(self) -> None:
        """Re-queue (or restart) what exited executors held; retried until Redis answers."""
        from redray.actor_lifecycle import process_exited
        from redray.recovery import recover_task

        while self.orphans:
            gone = self.orphans[0]
            how = _describe_exit(gone.status, gone.memory)
            try:
                self.client.delete(self.keys.inbox(gone.worker_id))
                if gone.state == sl.ACTOR and gone.actor_id:
                    process_exited(
                        self.runtime(), self.node_id, gone.actor_id, how, gone.task_id, gone.memory
                    )
                elif gone.state in (sl.RUNNING, sl.BLOCKED) and gone.task_id:
                    recover_task(
                        self.runtime(), self.node_id, gone.task_id, how, memory=gone.memory
                    )
            except redis.ConnectionError:
                raise
            except Exception:  # noqa: BLE001 - bad data in Redis must not stop the node
                log.exception("node %s: could not recover %s", self.node_id, gone)
            self.orphans.pop(0)

    def scale(self) -> None:
        counts = self.slots.counts()
        alive = len(self.pids) - counts[sl.ACTOR]
        idle = counts[sl.IDLE] + counts[sl.STARTING]
        if alive < self.min_executors:
            self.spawn()
            return
        if idle == 0 and alive < self.max_executors:
            free_cpu = int(self.client.hget(self.keys.node_avail(self.node_id), "CPU") or 0)
            if free_cpu > 0 or counts[sl.BLOCKED] > 0:
                self.spawn()
            return
        now = time.monotonic()
        if alive > self.min_executors:
            for pid, (slot, _) in list(self.pids.items()):
                if self.slots.state(slot) != sl.IDLE:
                    self.idle_since.pop(pid, None)
                    continue
                since = self.idle_since.setdefault(pid, now)
                if now - since > self.config.idle_timeout and idle > 1:
                    self.idle_since.pop(pid, None)
                    os.kill(pid, signal.SIGTERM)
                    return

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda signum, frame: self.slots.poke())
        self.register()
        control = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        control.subscribe(self.keys.control_channel(self.node_id))
        for _ in range(self.min_executors):
            self.spawn()
        self.client.rpush(self.keys.node_ready(self.node_id), "1")
        last_beat = 0.0
        orphaned = False
        try:
            while not self.stopping:
                try:
                    now = time.monotonic()
                    if now - last_beat >= HEARTBEAT_INTERVAL:
                        # checked before touching Redis: the driver may have
                        # taken its private server down with it
                        if self.owner_died():
                            orphaned = True
                            break
                        self.client.zadd(self.keys.heartbeats, {self.node_id: time.time()})
                        last_beat = now
                        if self.memory.check_machine() and not self.slots.paused():
                            # wake the executors that stopped claiming
                            self.client.publish(self.keys.node_channel(self.node_id), "memory")
                        self.reap_dead_jobs()
                        self.reap_dead_nodes()
                    self.memory.check_executors(self.pids)
                    self.reap()
                    self.scale()
                except redis.ConnectionError as exc:
                    if self.owner_died():
                        orphaned = True
                        break
                    log.warning("node %s: Redis unreachable (%s); retrying", self.node_id, exc)
                    time.sleep(1.0)
                except Exception:  # noqa: BLE001 - e.g. foreign data at a redray key
                    log.exception("node %s: unexpected error; carrying on", self.node_id)
                # sleep until an executor pokes (busy/blocked), a child exits
                # (SIGCHLD pokes too), a control message arrives or the next
                # heartbeat is due
                watched = [self.slots.wake_r]
                sock = getattr(control.connection, "_sock", None)
                if sock is not None:
                    watched.append(sock.fileno())
                limited = self.memory.any_limited(self.pids)
                select.select(watched, [], [], CHECK_INTERVAL if limited else HEARTBEAT_INTERVAL)
                self.slots.drain()
                self.handle_control(control)
        finally:
            self.shutdown()
            if orphaned:
                self.stop_owned_server()

    def handle_control(self, control: Any) -> None:
        """Apply 'kill <worker>' (``redray.kill`` of an actor here) and
        'cancel <worker> <task id> [force]' (``redray.cancel`` of a running task)."""
        while True:
            try:
                msg = control.get_message(timeout=0)
            except redis.RedisError:
                return
            if msg is None:
                return
            data = msg.get("data")
            if not isinstance(data, bytes):
                continue
            words = data.decode(errors="replace").split()
            if len(words) < 2 or words[0] not in ("kill", "cancel"):
                log.warning("node %s: ignoring control message %r", self.node_id, data[:80])
                continue
            for pid, (slot, wid) in self.pids.items():
                if wid != words[1]:
                    continue
                flags = words[3:]
                if words[0] == "kill" or "force" in flags:
                    sig = signal.SIGKILL
                else:
                    # the executor raises KeyboardInterrupt in the task if it
                    # still runs the task named here
                    task_id = words[2] if len(words) > 2 else ""
                    self.slots.set_cancel_request(slot, task_id, "shallow" not in flags)
                    sig = signal.SIGINT
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def owner_died(self) -> bool:
        pid = self.config.owner_pid
        if pid is None:
            return False
        return _create_time(pid) != self._owner_started

    def stop_owned_server(self) -> None:
        """The embedded driver died: take its private server down with us."""
        import shutil

        pid = self.config.server_pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 5
                while _create_time(pid) is not None and time.monotonic() < deadline:
                    time.sleep(0.02)
            except ProcessLookupError:
                pass
        if self.config.server_dir:
            shutil.rmtree(self.config.server_dir, ignore_errors=True)

    def reap_dead_nodes(self) -> None:
        """Take over the work of nodes that stopped heartbeating."""
        from redray.recovery import dead_nodes, recover_node

        for node_id in dead_nodes(self.runtime(), self.config.node_timeout):
            if node_id != self.node_id:
                recover_node(self.runtime(), node_id, self.node_id)
        if not self.client.hexists(self.keys.nodes, self.node_id):
            # we were declared dead (e.g. cut off too long): our tasks were
            # re-queued elsewhere, so start afresh
            log.warning("node %s was declared dead; re-registering", self.node_id)
            for pid in list(self.pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._reap_quietly()
            self.register()

    def reap_dead_jobs(self) -> None:
        """Clean up after drivers that stopped heartbeating (died without shutdown)."""
        cutoff = time.time() - self.config.job_timeout
        stale: Any = self.client.zrangebyscore(self.keys.job_beats, "-inf", cutoff)
        for raw in stale:
            job_id = raw.decode()
            # one node does it; the lock expires if that node dies mid-way
            if self.client.set(self.keys.job_reaper(job_id), self.node_id, nx=True, ex=60):
                log.warning("job %s: its driver stopped heartbeating; cleaning up", job_id)
                self.runtime().cleanup_job(job_id)
                self.client.delete(self.keys.job_reaper(job_id))

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self.slots.poke()

    def shutdown(self) -> None:
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 0.5
        while self.pids and time.monotonic() < deadline:
            self._reap_quietly()
            time.sleep(0.01)
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.pids and time.monotonic() < deadline:
            try:
                self.reap()
            except redis.RedisError:
                self._reap_quietly()
            time.sleep(0.01)
        try:
            self.deregister()
        except redis.RedisError:
            pass
        if self._runtime is not None:
            self._runtime.close()
        self.client.close()

    def _reap_quietly(self) -> None:
        while self.pids:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.pids.clear()
                return
            if pid == 0:
                return
            entry = self.pids.pop(pid, None)
            if entry is not None:
                self.slots.set_state(entry[0], sl.FREE)


def _describe_exit(status: int, memory: tuple[int, int] | None = None) -> str:
    if memory is not None:
        used, allowed = memory
        return (
            f"killed for using {format_bytes(used)} of memory, more than its "
            f"memory={format_bytes(allowed)}"
        )
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.WEXITSTATUS(status)}"


def _exit_with_parent(parent: int) -> None:
    """Have the kernel send this executor SIGTERM when its node agent dies.

    An executor without its agent would keep claiming work that nobody can
    recover if it crashes; it finishes the task in hand and exits instead.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the agent died before prctl took effect
        os._exit(0)


def _create_time(pid: int | None) -> float | None:
    if pid is None:
        return None
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return float(proc.create_time())
    except psutil.Error:
        return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = NodeConfig(**json.loads(args[0]))
    logging.basicConfig(level=logging.WARNING, format="(redray node) %(levelname)s %(message)s")
    NodeAgent(config).run()


if __name__ == "__main__":
    main()
