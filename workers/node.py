"""The node agent: advertises a machine's resources and keeps its executors.

It registers the node (totals, free resources, GPU ids) in Redis, forks a
pool of executors, starts another when every executor is busy and the node
still has room (a task blocked in ``get`` gave its CPU back), replaces an
executor that crashed (re-queueing the task its claim record names, within
its retry budget), and on stop removes everything it registered.

Three threads do what must not wait behind the rest: ``redray-heartbeat``
(one beat a second, on its own connection, timed by the server's clock),
``redray-control`` (kill and cancel requests from the node's control stream)
and ``redray-reaper`` (cleaning up after dead drivers and dead nodes, in
bounded batches under fenced locks).

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import redis

from redray import ids, jobs, recovery, server_guard
from redray.cluster import Cluster
from redray.connections import TRANSIENT, BudgetRetry, blocking_call
from redray.constants import Keys
from redray.identity import node_ip
from redray.node_launch import finish_package_import, read_config
from redray.resources import node_totals
from redray.settings import Settings

from . import runtime_env_cache
from . import slots as sl
from .memory import CHECK_INTERVAL, MemoryMonitor, floor_bytes, format_bytes

log = logging.getLogger("redray.node")

HEARTBEAT_INTERVAL = 1.0
#: Actor processes one node may host.
MAX_ACTORS = 1000
#: Seconds the node's `up` list lives (read by whoever started the node).
UP_TTL = 120
#: How long the control thread blocks per read.
CONTROL_BLOCK = 2.0
#: Seconds the stop gives Redis to take back this node's work and
#: registration; an unreachable server is not waited for (whoever finds the
#: node dead does it then).
STOP_BUDGET = 0.25

T = TypeVar("T")


class NodeStopping(Exception):
    """A Redis call of the agent's main thread given up because the node is
    stopping: a stop does not wait out an outage."""


class StopAwareRetry(BudgetRetry):
    """The retry of the agent's main-thread client: ``BudgetRetry``'s, except
    that once ``stopping`` is set a failed attempt raises NodeStopping
    instead of waiting to try again. ``pausing`` is true while it sleeps
    between attempts, where the SIGTERM handler may end the sleep."""

    def __init__(self, budget: float, stopping: threading.Event) -> None:
        super().__init__(budget)
        self.stopping = stopping
        self.pausing = False

    def __deepcopy__(self, memo: dict[int, Any]) -> StopAwareRetry:
        # redis-py copies a client's retry into each of its connections: they
        # share this one, whose flags are the node's, not a connection's
        return self

    def call_with_retry(
        self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        def attempt() -> T:
            self.pausing = False
            return do()

        def fail_or_stop(error: BaseException, *more: Any) -> None:
            fail(error, *more)
            if self.stopping.is_set():
                raise NodeStopping(str(error)) from error
            self.pausing = True

        try:
            return super().call_with_retry(attempt, fail_or_stop, *args, **kwargs)
        finally:
            self.pausing = False


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
    #: seconds without a beat after which a job whose driver ran on this host
    #: and whose process is gone is cleaned up (a silent driver elsewhere, or a
    #: paused one, keeps its job for its own grace: jobs.py)
    job_timeout: float = jobs.DEAD_DRIVER_TIMEOUT
    #: seconds without a node heartbeat after which its work is taken over
    node_timeout: float = recovery.NODE_TIMEOUT
    #: embedded mode: the driver that started this node, and its private server;
    #: if the driver dies without shutdown(), the node stops both
    owner_pid: int | None = None
    server_pid: int | None = None
    server_dir: str | None = None
    #: take no new work while the machine has less memory available than this:
    #: bytes, or a fraction of its memory when at most 1 (None: 5%)
    min_free_memory: float | None = None
    #: the cluster secret that signs payloads (redray/signing.py); reaches the
    #: node on stdin or from REDRAY_SECRET, never on a command line
    secret: str | None = field(default=None, repr=False)


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
        self.settings = Settings.from_url(config.address).replace(secret=config.secret)
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
        #: set on SIGTERM/SIGINT: the threads stop waiting, and so do the main
        #: thread's Redis retries
        self._halt = threading.Event()
        self.cluster = Cluster.connect(self.settings)
        self._retry = StopAwareRetry(self.settings.outage_budget, self._halt)
        self.cluster.client.set_retry(self._retry)
        self.client = self.cluster.client
        self.stopping = False
        #: the heartbeat found this node declared dead: the main loop re-registers
        self.declared_dead = threading.Event()
        self._pids_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._owner_started = jobs.process_started(config.owner_pid)
        #: the private server's start time: its pid may name another process later
        self._server_started = jobs.process_started(config.server_pid)
        self.agent_pid = os.getpid()

    # -- registration ------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "hostname": socket.gethostname(),
            "ip": node_ip(),
            "pid": os.getpid(),
            "totals": self.totals,
            "gpu_ids": self.gpu_ids,
            "started": time.time(),
        }

    def _node_keys(self) -> list[str]:
        k = self.keys
        nid = self.node_id
        return [
            k.node_avail(nid),
            k.node_gpus(nid),
            k.node_running(nid),
            k.node_wake(nid),
            k.node_control(nid),
        ]

    def register(self) -> None:
        """(Re)register with the totals free; idempotent."""
        k = self.keys
        nid = self.node_id
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*self._node_keys())
            pipe.hset(k.node_avail(nid), mapping=dict(self.totals))  # type: ignore[arg-type]
            if self.gpu_ids:
                pipe.hset(k.node_gpus(nid), mapping={g: 10_000 for g in self.gpu_ids})
            pipe.hset(k.nodes, nid, json.dumps(self.info()))
            pipe.execute()
        self.cluster.scripts.heartbeat(k.nodes, k.heartbeats, nid, retry=True)

    # -- executors -----------------------------------------------------------------------
    def spawn(self) -> int | None:
        slot = self.slots.free_slot()
        if slot is None:
            return None
        worker_id = ids.random_id(10)
        # listed before it exists: whoever recovers this node deletes its keys
        self.client.sadd(self.keys.node_workers(self.node_id), worker_id)
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
                from .executor import executor_main  # imported by start()

                executor_main(self.settings, self.node_id, worker_id, self.totals, self.slots, slot)
            except BaseException:  # noqa: BLE001
                log.exception("executor crashed")
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        with self._pids_lock:
            self.pids[pid] = (slot, worker_id)
        return pid

    def reap(self) -> None:
        self._collect_exited()
        self.recover_orphans()

    def _collect_exited(self) -> None:
        """Wait for the executors that exited and keep what they held."""
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            with self._pids_lock:
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

    def recover_orphans(self, cluster: Cluster | None = None) -> None:
        """Re-queue (or restart) what exited executors held; retried until Redis
        answers. The claim record, written by claim.lua in the same step that
        took the task, names what an executor held even if it died before
        noting it in its slot."""
        from redray.actor_lifecycle import process_exited

        cluster = cluster or self.cluster
        while self.orphans:
            gone = self.orphans[0]
            how = _describe_exit(gone.status, gone.memory)
            try:
                if gone.state == sl.ACTOR and gone.actor_id:
                    process_exited(
                        cluster,
                        self.node_id,
                        gone.actor_id,
                        how,
                        gone.task_id,
                        gone.memory,
                        worker_id=gone.worker_id,
                    )
                    recovery.forget_executor(cluster, self.node_id, gone.worker_id)
                else:
                    recovery.recover_executor(
                        cluster, self.node_id, gone.worker_id, how, memory=gone.memory
                    )
            except (*TRANSIENT, NodeStopping):
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
        orphaned = False
        last_check = 0.0
        try:
            try:
                self.start()
            except NodeStopping:
                return  # stopped while the server did not answer
            while not self.stopping:
                try:
                    now = time.monotonic()
                    if now - last_check >= HEARTBEAT_INTERVAL:
                        last_check = now
                        # checked before touching Redis: the driver may have
                        # taken its private server down with it
                        if self.owner_died():
                            orphaned = True
                            break
                        if self.memory.check_machine() and not self.slots.paused():
                            # wake the executors that stopped claiming
                            self._wake_executors("m")
                    if self.declared_dead.is_set():
                        self.start_afresh()
                    self.memory.check_executors(self._pid_table())
                    self.reap()
                    self.scale()
                except NodeStopping:
                    break
                except TRANSIENT as exc:
                    if self.owner_died():
                        orphaned = True
                        break
                    log.warning("node %s: Redis unreachable (%s); retrying", self.node_id, exc)
                    self._halt.wait(1.0)
                except Exception:  # noqa: BLE001 - e.g. foreign data at a redray key
                    log.exception("node %s: unexpected error; carrying on", self.node_id)
                # sleep until an executor pokes (busy/blocked), a child exits
                # (SIGCHLD pokes too) or the next check is due
                limited = self.memory.any_limited(self._pid_table())
                select.select(
                    [self.slots.wake_r], [], [], CHECK_INTERVAL if limited else HEARTBEAT_INTERVAL
                )
                self.slots.drain()
        finally:
            self.shutdown()
            if orphaned:
                self.stop_owned_server()

    def start(self) -> None:
        """Register, say the node is up, start the executors and the threads."""
        self.register()
        # short of memory already: no executor may claim before it knows
        self.memory.check_machine()
        with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(self.keys.node_ready(self.node_id), "1")
            pipe.expire(self.keys.node_ready(self.node_id), UP_TTL)
            pipe.execute()
        # What executors run (the executor and redray's public API, which
        # tasks use) is imported here, once, and shared by every fork: about
        # a third of the node's start, which init() no longer waits for, as
        # Ray's init does not wait for its workers. Tasks submitted meanwhile
        # wait in their queues for the first executor.
        finish_package_import()
        from . import executor  # noqa: F401

        if self.stopping:
            return  # stopped while it imported (init() then shutdown() at once)
        for _ in range(self.min_executors):
            self.spawn()
        for target, name in (
            (self._heartbeat_loop, "redray-heartbeat"),
            (self._control_loop, "redray-control"),
            (self._reaper_loop, "redray-reaper"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pid_table(self) -> dict[int, tuple[int, str]]:
        with self._pids_lock:
            return dict(self.pids)

    def _wake_executors(self, token: str) -> None:
        key = self.keys.node_wake(self.node_id)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.rpush(key, *([token] * max(1, self.min_executors)))
            pipe.ltrim(key, -16, -1)
            pipe.execute()

    # -- the heartbeat thread ------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        """One beat a second on a connection of its own (short timeouts: a beat
        that cannot get through is skipped, the next one tries again)."""
        cluster = Cluster.connect(self.settings.replace(socket_timeout=2.0))
        k = self.keys
        try:
            while not self.stopping:
                try:
                    if not cluster.scripts.heartbeat(k.nodes, k.heartbeats, self.node_id):
                        self.declared_dead.set()
                        self.slots.poke()
                except (redis.RedisError, OSError):
                    pass
                self._halt.wait(HEARTBEAT_INTERVAL)
        finally:
            cluster.close()

    def start_afresh(self) -> None:
        """We were declared dead (paused or cut off too long): our tasks were
        re-queued elsewhere and our registration deleted. Kill our executors,
        recover what their claim records still name (idempotent: most is done
        already), and register again."""
        log.warning("node %s was declared dead; re-registering", self.node_id)
        for pid in list(self._pid_table()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while self.pids and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        self.register()
        self.declared_dead.clear()

    # -- the control thread --------------------------------------------------------------
    def _control_loop(self) -> None:
        """Apply requests from the node's control stream, oldest first; an
        entry is deleted once applied, so nothing written while the node was
        cut off is lost."""
        cluster = Cluster.connect(self.settings)
        key = self.keys.node_control(self.node_id)
        last = "0"
        try:
            while not self.stopping:
                try:
                    reply = blocking_call(
                        cluster.single,
                        CONTROL_BLOCK,
                        "XREAD",
                        "COUNT",
                        100,
                        "BLOCK",
                        int(CONTROL_BLOCK * 1000),
                        "STREAMS",
                        key,
                        last,
                    )
                except TRANSIENT:
                    time.sleep(0.5)
                    continue
                except Exception:  # noqa: BLE001 - e.g. a foreign value at the key
                    log.exception("node %s: could not read control requests", self.node_id)
                    time.sleep(1.0)
                    continue
                if not reply:
                    continue
                done: list[bytes] = []
                for entry_id, flat in reply[0][1]:
                    fields = {bytes(flat[i]): flat[i + 1] for i in range(0, len(flat or []), 2)}
                    self.handle_control(fields.get(b"r", b""))
                    done.append(bytes(entry_id))
                last = done[-1].decode()
                try:
                    cluster.client.xdel(key, *done)
                except redis.RedisError:
                    pass  # applied twice after a restart at most: requests are idempotent
        finally:
            cluster.close()

    def handle_control(self, data: Any) -> None:
        """Apply 'kill <worker>' (``redray.kill`` of an actor here) and
        'cancel <worker> <task id> [force] [shallow]' (``redray.cancel`` of a
        running task). Unknown requests are ignored."""
        if not isinstance(data, bytes):
            return
        words = data.decode(errors="replace").split()
        if len(words) < 2 or words[0] not in ("kill", "cancel"):
            log.warning("node %s: ignoring control request %r", self.node_id, data[:80])
            return
        for pid, (slot, wid) in self._pid_table().items():
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

    # -- the reaper thread ---------------------------------------------------------------
    def _reaper_loop(self) -> None:
        """Clean up after dead drivers and dead nodes, off the heartbeat path."""
        cluster = Cluster.connect(self.settings)
        try:
            while not self.stopping:
                try:
                    self.reap_dead_jobs(cluster)
                    self.reap_dead_nodes(cluster)
                except (redis.RedisError, OSError):
                    pass
                except Exception:  # noqa: BLE001 - bad data must not stop the reaper
                    log.exception("node %s: reaper error; carrying on", self.node_id)
                self._halt.wait(HEARTBEAT_INTERVAL)
        finally:
            cluster.close()

    def reap_dead_nodes(self, cluster: Cluster) -> None:
        """Take over the work of nodes that stopped heartbeating."""
        for node_id in recovery.dead_nodes(cluster, self.config.node_timeout):
            if node_id != self.node_id and not self.stopping:
                recovery.recover_node(cluster, node_id)

    def reap_dead_jobs(self, cluster: Cluster) -> None:
        """Clean up after drivers that stopped heartbeating: past their grace,
        or sooner when they ran on this host and their process is gone."""
        _now, silent = cluster.scripts.expired(
            cluster.keys.job_beats, min(self.config.job_timeout, jobs.DEAD_DRIVER_TIMEOUT)
        )
        if not silent:
            return
        host = socket.gethostname()
        for job_id, last_beat in silent:
            info = jobs.job_info(cluster, job_id)
            silent_ms = _now - last_beat
            if self.stopping or not jobs.reap_due(info, silent_ms, host, self.config.job_timeout):
                continue
            log.warning("job %s: its driver stopped heartbeating; cleaning up", job_id)
            jobs.cleanup_job(cluster, job_id)

    def owner_died(self) -> bool:
        pid = self.config.owner_pid
        if pid is None:
            return False
        return jobs.process_started(pid) != self._owner_started

    def stop_owned_server(self) -> None:
        """The embedded driver died: take its private server down with us."""
        server_guard.stop_owned_server(
            self.config.server_pid, self.config.server_dir, self._server_started
        )

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True
        self._halt.set()
        self.slots.poke()
        if self._retry.pausing:
            # the main thread sleeps between two tries of a Redis call
            # (nothing half done): end the call now rather than after the sleep
            raise NodeStopping("stopping")

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
            self._collect_exited()
            time.sleep(0.01)
        # hand back what is still reserved here (what the executors killed
        # just now held, a claim whose executor exited before running it, an
        # actor to restart elsewhere), then delete the registration and the
        # executors' keys; briefly, when Redis does not answer (whoever finds
        # this node dead does it then)
        try:
            quick = Cluster.connect(
                self.settings.replace(
                    outage_budget=STOP_BUDGET, connect_timeout=1.0, socket_timeout=2.0
                )
            )
            try:
                self.recover_orphans(quick)
                recovery.recover_node(quick, self.node_id)
            finally:
                quick.close()
        except (redis.RedisError, OSError):
            pass
        # the threads are daemons with connections of their own: none can
        # undo the deregistration (a heartbeat for an unknown node is refused)
        self._halt.set()
        self.cluster.close()
        runtime_env_cache.remove_node_dir(self.settings.prefix, self.node_id)

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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = NodeConfig(**read_config(args))
    logging.basicConfig(level=logging.WARNING, format="(redray node) %(levelname)s %(message)s")
    NodeAgent(config).run()


if __name__ == "__main__":
    main()
