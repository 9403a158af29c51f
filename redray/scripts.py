"""Typed wrappers around the Lua scripts in ``redray/lua``.

Each script is registered once per client with ``register_script`` (EVALSHA,
reloaded transparently after SCRIPT FLUSH). The wrappers build every key the
script touches and pass it through KEYS; the scripts never build key names.
Each wrapper says whether its script is idempotent; only those are re-sent
after a connection error (``retry=True``, within the outage budget).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, NamedTuple, TypeVar

import redis
from redis.commands.core import Script

from .connections import Batch, Lane, retrying
from .constants import MAILBOX_GROUP, MAX_DEAD_LETTERS, Keys
from .settings import Settings

T = TypeVar("T")

_NAMES = (
    "submit",
    "claim",
    "complete",
    "subscribe",
    "cancel",
    "requeue",
    "block",
    "unblock",
    "heartbeat",
    "expired",
    "lock",
    "job_cleanup",
    "shape_wake",
    "create_actor",
    "actor_call",
    "actor_ready",
    "actor_dead",
    "actor_restarting",
    "queue_put",
    "queue_get",
    "queue_return",
)


#: Scripts that use a Lua library (prepended when they are loaded).
_LIBRARIES = {
    "claim": ("claim_lib",),
    "complete": ("claim_lib",),
    "queue_put": ("queue_lib",),
    "queue_get": ("queue_lib",),
    "queue_return": ("queue_lib",),
}


def _read(name: str) -> str:
    return resources.files("redray.lua").joinpath(f"{name}.lua").read_text()


def _source(name: str) -> str:
    return "".join(_read(lib) + "\n" for lib in _LIBRARIES.get(name, ())) + _read(name)


@dataclass
class Claimed:
    task_id: str
    spec: bytes
    reservation: str
    #: the node's free CPU units right after the claim (-1: not known)
    free_cpu: int = field(default=-1, compare=False)


@dataclass
class ReturnValue:
    """One result of a task, ready to publish."""

    object_id: str
    #: small record data (``d`` field), or None when the value was staged
    data: bytes | None
    #: attempt tag of the staging key, for large values
    staged_attempt: str | None = None


class Record(NamedTuple):
    """A reservation record: who holds it, what, and how much CPU it gave back
    while blocked in ``get``."""

    worker: str
    reservation: str
    blocked: int


def parse_record(raw: bytes | str | None) -> Record | None:
    """A ``node:<n>:running`` value; None when missing or malformed."""
    if raw is None:
        return None
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    parts = text.split(" ")
    if len(parts) != 3 or not parts[2].isdigit() or ";" not in parts[1]:
        return None
    return Record(parts[0], parts[1], int(parts[2]))


#: The owner of a task nobody waits for (an actor's creation task, an
#: unreadable spec): complete.lua then pushes no notice.
NO_OWNER = "-"


class Scripts:
    """The scripts of one cluster, bound to one client."""

    NOTICE_LIMIT = 4096

    def __init__(self, client: redis.Redis, keys: Keys, settings: Settings | None = None) -> None:
        self.client = client
        #: the connection the hot calls (claim, publish, submit) keep
        self.lane = Lane(client)
        self.keys = keys
        self.settings = settings or Settings()
        self._scripts: dict[str, Script] = {n: client.register_script(_source(n)) for n in _NAMES}
        self._complete_cache: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.load()

    def load(self) -> None:
        """Load every script now, so a batch never meets NOSCRIPT for one
        script and not for another (which would reorder their effects)."""
        scripts = list(self._scripts.values())

        def load_all() -> list[Any]:
            with self.client.pipeline(transaction=False) as pipe:
                for script in scripts:
                    pipe.script_load(script.script)
                return list(pipe.execute())

        shas = retrying(self.settings, load_all)
        for script, sha in zip(scripts, shas):
            script.sha = sha if isinstance(sha, str) else sha.decode()

    def _run(
        self,
        name: str,
        keys: list[str],
        args: list[Any],
        pipe: Batch | None = None,
        *,
        retry: bool = False,
    ) -> Any:
        script = self._scripts[name]
        if pipe is not None:
            pipe.evalsha(script, keys, args)
            return None

        def once() -> Any:
            batch = Batch(self.lane)
            batch.evalsha(script, keys, args)
            return batch.execute()[0]

        return retrying(self.settings, once) if retry else once()

    def batch(self) -> Batch:
        return Batch(self.lane)

    def retrying(self, fn: Callable[[], T]) -> T:
        return retrying(self.settings, fn)

    # -- submit (idempotent) ----------------------------------------------------
    def submit(
        self,
        job_id: str,
        owner: str,
        tasks: Sequence[tuple[int, str, str, bytes, Sequence[str]]],
        pipe: Batch | None = None,
        nested: bool = False,
    ) -> Any:
        """Register tasks ``(submission number, task id, shape, spec, input
        object ids)``; ``nested`` (a running task or actor submits them)
        queues them ahead of top-level tasks."""
        k = self.keys
        shape_at: dict[str, int] = {}
        index: dict[str, int] = {}
        dep_keys: list[str] = []
        for _n, _tid, shape, _spec, deps in tasks:
            if shape not in shape_at:
                shape_at[shape] = len(shape_at) + 1
            for oid in deps:
                if oid not in index:
                    index[oid] = len(index) + 1
                    dep_keys.append(k.obj(oid))
                    dep_keys.append(k.waiters(oid))
        argv: list[Any] = [len(shape_at), len(index), len(tasks), 1 if nested else 0, *shape_at]
        for n, tid, shape, spec, deps in tasks:
            # each distinct input once
            distinct = list(dict.fromkeys(deps))
            argv.extend((n, tid, shape_at[shape], spec, len(distinct)))
            argv.extend(index[oid] for oid in distinct)
            argv.extend(distinct)
        keys = [
            k.task_spec,
            k.task_state,
            k.deps_left,
            k.ready,
            k.seq,
            k.job_tasks(job_id),
            k.job_keys(job_id),
            k.submitted(owner),
            *[k.bell(shape) for shape in shape_at],
            *dep_keys,
        ]
        return self._run("submit", keys, argv, pipe)

    # -- claim (idempotent per executor) -----------------------------------------
    def claim_keys(self, node_id: str, worker_id: str, shapes: Sequence[str]) -> list[str]:
        k = self.keys
        return [
            k.ready,
            k.task_spec,
            k.task_state,
            k.node_avail(node_id),
            k.node_gpus(node_id),
            k.node_running(node_id),
            k.dead_letters,
            k.claim(worker_id),
            *[k.bell(s) for s in shapes],
        ]

    def claim(
        self,
        node_id: str,
        worker_id: str,
        shapes: Sequence[str],
        pipe: Batch | None = None,
        *,
        held: int = 0,
    ) -> Any:
        """Claim the oldest task that fits; ``held`` is the 1-based index in
        ``shapes`` of the bell token the caller popped (0: none). Idempotent
        per executor: asking again returns the task it holds."""
        argv = [node_id, worker_id, MAX_DEAD_LETTERS, held, *shapes]
        return self._run("claim", self.claim_keys(node_id, worker_id, shapes), argv, pipe)

    @staticmethod
    def parse_claim(reply: Any) -> Claimed | None:
        if not reply:
            return None
        tid, spec, reservation = reply[:3]
        free = int(reply[3]) if len(reply) > 3 else -1
        return Claimed(tid.decode(), spec, reservation.decode(), free)

    # -- complete (idempotent) -----------------------------------------------------
    def complete(
        self,
        *,
        task_id: str,
        job_id: str,
        owner: str,
        node_id: str | None,
        returns: Sequence[ReturnValue],
        pipe: Batch | None = None,
        final: bool = True,
        run: bool = False,
        worker_id: str = "",
        claim_next: bool = False,
        bells: Sequence[str] = (),
        actor_id: str = "",
        entry_id: str = "",
        retry: bool = False,
    ) -> Any:
        """Publish results, and with ``claim_next`` claim the executor's next
        task from the shapes of ``bells``; the reply is parsed by
        ``parse_complete``. Idempotent. ``run``: an executor's run of a
        queued task publishes, whose values are stored only while the task
        has not finished (complete.lua, ARGV[6])."""
        k = self.keys
        node = node_id or "-"
        keys = [*self._complete_keys(job_id, owner, node, worker_id, actor_id)]
        keys.extend(k.bell(s) for s in bells)
        argv: list[Any] = [
            task_id,
            job_id,
            len(bells),
            len(returns),
            -1 if owner == NO_OWNER else self.NOTICE_LIMIT,
            ("F" if final else "Y") if run else ("f" if final else "y"),
            "1" if claim_next else "0",
            entry_id,
            MAILBOX_GROUP,
            node,
            worker_id,
            MAX_DEAD_LETTERS,
            *bells,
        ]
        staged: list[str] = []
        for ret in returns:
            keys.extend((k.obj(ret.object_id), k.waiters(ret.object_id), k.done(ret.object_id)))
            if ret.data is None:
                assert ret.staged_attempt is not None
                staged.append(k.staged(ret.object_id, ret.staged_attempt))
                argv.extend((ret.object_id, "s", ""))
            else:
                argv.extend((ret.object_id, "i", ret.data))
        keys.extend(staged)
        return self._run("complete", keys, argv, pipe, retry=retry)

    def _complete_keys(
        self, job_id: str, owner: str, node: str, worker_id: str, actor_id: str
    ) -> tuple[str, ...]:
        """complete.lua's fixed keys, the same for every call of one job,
        owner and process: built once (formatting them cost an actor a tenth
        of a call)."""
        cache_key = (job_id, owner, node, worker_id, actor_id)
        keys = self._complete_cache.get(cache_key)
        if keys is None:
            k = self.keys
            keys = (
                k.task_spec,
                k.task_state,
                k.deps_left,
                k.ready,
                k.seq,
                k.node_avail(node),
                k.node_gpus(node),
                k.node_running(node),
                k.jobs,
                k.job_tasks(job_id),
                k.job_keys(job_id),
                k.inbox(owner),
                k.retries,
                k.claim(worker_id) if worker_id else k.nothing,
                k.node_wake(node),
                k.mailbox(actor_id) if actor_id else k.nothing,
                k.actor_cancelled(actor_id) if actor_id else k.nothing,
                k.dead_letters,
                k.submitted(owner),
            )
            if len(self._complete_cache) >= 1024:
                self._complete_cache.clear()  # bounded: callers come and go
            self._complete_cache[cache_key] = keys
        return keys

    @staticmethod
    def parse_complete(reply: Any) -> tuple[int, Claimed | None, list[str]]:
        """(1 if stored, the next task claimed or None, shapes of dependants
        made ready whose bell was not passed)."""
        if not isinstance(reply, list) or not reply:
            return int(reply or 0), None, []
        claimed = None
        if len(reply) >= 5 and reply[1]:
            claimed = Claimed(
                bytes(reply[1]).decode(), bytes(reply[2]), bytes(reply[3]).decode(), int(reply[4])
            )
        missed = [s.decode() if isinstance(s, bytes) else str(s) for s in reply[5:]]
        return int(reply[0]), claimed, missed

    # -- subscribe (idempotent) ------------------------------------------------------
    def subscribe(
        self, worker_id: str, object_ids: Sequence[str], subscribe: bool, *, retry: bool = True
    ) -> list[bool]:
        k = self.keys
        keys: list[str] = []
        for oid in object_ids:
            keys.append(k.obj(oid))
            keys.append(k.waiters(oid))
        reply = self._run(
            "subscribe", keys, ["@" + worker_id, "1" if subscribe else "0"], retry=retry
        )
        return [bool(x) for x in reply]

    # -- cancel (idempotent) -----------------------------------------------------------
    def cancel(self, task_id: str, shapes: Sequence[str] = ()) -> str:
        """``shapes``: the bells to keep in step with their queues (a removed
        queued task's token goes with it)."""
        k = self.keys
        keys = [k.task_state, k.deps_left, k.ready, *[k.bell(s) for s in shapes]]
        reply = self._run("cancel", keys, [task_id, *shapes], retry=True)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    # -- requeue (idempotent) ------------------------------------------------------------
    def requeue(
        self, node_id: str, task_id: str, worker_id: str, max_retries: int, shape: str
    ) -> int:
        k = self.keys
        keys = [
            k.task_state,
            k.ready,
            k.seq,
            k.node_avail(node_id),
            k.node_gpus(node_id),
            k.node_running(node_id),
            k.retries,
            k.claim(worker_id) if worker_id else k.nothing,
            k.node_wake(node_id),
            k.bell(shape),
        ]
        return int(self._run("requeue", keys, [task_id, max_retries, shape], retry=True))

    # -- blocked get (idempotent) ------------------------------------------------------------
    def block(self, node_id: str, task_id: str) -> int:
        k = self.keys
        keys = [k.node_running(node_id), k.node_avail(node_id), k.node_wake(node_id)]
        return int(self._run("block", keys, [task_id], retry=True))

    def unblock(self, node_id: str, task_id: str) -> int:
        k = self.keys
        keys = [k.node_running(node_id), k.node_avail(node_id)]
        return int(self._run("unblock", keys, [task_id], retry=True))

    # -- liveness (idempotent) -----------------------------------------------------------------
    def heartbeat(self, registry: str, beats: str, member: str, *, retry: bool = False) -> bool:
        return bool(self._run("heartbeat", [registry, beats], [member], retry=retry))

    def expired(
        self, beats: str, age_s: float, limit: int = 1000
    ) -> tuple[int, list[tuple[str, int]]]:
        """(server now in ms, [(member, last beat in ms)]) of members older than ``age_s``."""
        reply = self._run("expired", [beats], [int(age_s * 1000), limit], retry=True)
        now = int(reply[0])
        pairs = reply[1:]
        return now, [(pairs[i].decode(), int(float(pairs[i + 1]))) for i in range(0, len(pairs), 2)]

    def lock(self, key: str, op: str, token: str, ttl_s: float = 30.0) -> bool:
        return bool(self._run("lock", [key], [op, token, int(ttl_s * 1000)], retry=True))

    def job_cleanup(
        self, lock_key: str, token: str, job_id: str, batch: int, shapes: Sequence[str] = ()
    ) -> int:
        k = self.keys
        keys = [
            lock_key,
            k.job_tasks(job_id),
            k.task_spec,
            k.task_state,
            k.deps_left,
            k.ready,
            k.retries,
            *[k.bell(s) for s in shapes],
        ]
        return int(self._run("job_cleanup", keys, [token, batch, *shapes], retry=True))

    def known_shapes(self) -> list[str]:
        raw: Any = self.client.hkeys(self.keys.shapes)
        return [s.decode(errors="replace") for s in raw]

    def register_shape(self, shape: str) -> tuple[bool, dict[bytes, bytes]]:
        """Add ``shape`` to the shapes hash; returns (whether it was new, the
        nodes hash read after it). Idempotent. The nodes, and then their
        executors, are read after the shape is written: an executor that
        starts later reads the shapes itself, so none is missed."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hsetnx(self.keys.shapes, shape, 1)
            pipe.hgetall(self.keys.nodes)
            new, nodes = pipe.execute()
        return bool(new), nodes

    def wake_for_shape(self, node_ids: Sequence[str]) -> int:
        """Push one ``s`` token onto the wake list of every live executor of
        ``node_ids`` (shape_wake.lua); returns how many were told. Idempotent."""
        k = self.keys
        with self.client.pipeline(transaction=False) as pipe:
            for node in node_ids:
                pipe.smembers(k.node_workers(node))
            listed: list[Any] = pipe.execute()
        keys: list[str] = []
        workers: list[str] = []
        for node, members in zip(node_ids, listed):
            for raw in sorted(members):
                worker = raw.decode(errors="replace")
                keys += [k.node_workers(node), k.executor_wake(worker)]
                workers.append(worker)
        if not workers:
            return 0
        return int(self._run("shape_wake", keys, workers, retry=True))

    # -- actors ---------------------------------------------------------------------
    def create_actor(
        self,
        *,
        actor_id: str,
        job_id: str,
        name_key: str,
        detached: bool,
        fields: dict[str, Any],
    ) -> tuple[str, str]:
        """Register an actor; returns ('created'|'exists', actor id). Idempotent."""
        k = self.keys
        argv: list[Any] = [name_key, actor_id, "1" if detached else "0", MAILBOX_GROUP]
        for key, value in fields.items():
            argv.extend((key, value))
        reply = self._run(
            "create_actor",
            [
                k.actor_names,
                k.actor(actor_id),
                k.mailbox(actor_id),
                k.job_actors(job_id),
                k.job_keys(job_id),
                k.actors,
            ],
            argv,
            retry=True,
        )
        return reply[0].decode(), reply[1].decode()

    def actor_call(
        self, owner: str, calls: Sequence[tuple[int, str, bytes]], pipe: Batch | None = None
    ) -> Any:
        """Append ``(submission number, actor id, spec)`` calls to their
        mailboxes (see actor_call.lua). Idempotent."""
        k = self.keys
        keys: list[str] = [k.submitted(owner)]
        argv: list[Any] = []
        for n, actor_id, spec in calls:
            keys.append(k.actor(actor_id))
            keys.append(k.mailbox(actor_id))
            argv.extend((n, spec))
        return self._run("actor_call", keys, argv, pipe)

    def actor_ready(
        self,
        *,
        actor_id: str,
        node_id: str,
        task_id: str,
        release_cpu: int,
        keep: str,
        fields: dict[str, Any],
    ) -> bool:
        """Idempotent."""
        k = self.keys
        argv: list[Any] = [task_id, release_cpu, keep]
        for key, value in fields.items():
            argv.extend((key, value))
        keys = [
            k.actor(actor_id),
            k.node_avail(node_id),
            k.node_running(node_id),
            k.node_wake(node_id),
        ]
        return bool(self._run("actor_ready", keys, argv, retry=True))

    def actor_dead(
        self, *, actor_id: str, job_id: str, death: bytes, name_key: str
    ) -> tuple[str, str, str]:
        """Mark an actor dead (idempotent); returns (previous state, node id,
        worker id) of its process, or of its creation task while ``__init__``
        runs ('' when none)."""
        k = self.keys
        keys = [
            k.actor(actor_id),
            k.actor_names,
            k.job_actors(job_id or "-"),
            k.actors,
            k.task_state,
        ]
        reply = self._run("actor_dead", keys, [actor_id, death, name_key], retry=True)
        state, node, worker = (x.decode() if isinstance(x, bytes) else str(x) for x in reply)
        return state, node, worker

    def actor_restarting(self, actor_id: str, how: str, oom: bool) -> bool:
        """Record a restart unless the actor died or its record went (idempotent)."""
        keys = [self.keys.actor(actor_id)]
        return bool(self._run("actor_restarting", keys, [how, "1" if oom else ""], retry=True))

    # -- util.queue -------------------------------------------------------------------
    def _run_on(self, client: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run a script that must not be re-sent on ``client`` (one without
        retries, ``Cluster.single``): its pool checks a connection when it
        hands it out, so one that died idle (a network fault) is replaced
        before anything is sent, where the lane's kept one would fail."""
        return self._scripts[name](keys=keys, args=args, client=client)

    def queue_put(
        self, client: redis.Redis, keys: Sequence[str], take: bool, items: Sequence[bytes]
    ) -> list[int]:
        """Append ``items`` to a Queue, all or none (queue_put.lua); ``keys``:
        (items, free, meta). ``take``: take a free slot per item, else the
        caller holds them. Not idempotent (a push): never re-sent."""
        args = ["take" if take else "held", *items]
        return [int(x) for x in self._run_on(client, "queue_put", list(keys), args)]

    def queue_get(self, client: redis.Redis, keys: Sequence[str], n: int) -> tuple[int, list[Any]]:
        """Take exactly ``n`` items from a Queue, or none (queue_get.lua):
        (1, items), (0, [size]) or (-1, []). Not idempotent (a pop): never re-sent."""
        reply = self._run_on(client, "queue_get", list(keys), [n])
        return int(reply[0]), list(reply[1:])

    def queue_return(
        self, client: redis.Redis, keys: Sequence[str], slots: int, items: Sequence[bytes] = ()
    ) -> int:
        """Give a Queue back ``slots`` free slots and put ``items`` back at its
        front (queue_return.lua); -1 if it was shut down. Not idempotent: never re-sent."""
        return int(self._run_on(client, "queue_return", list(keys), [slots, *items]))
