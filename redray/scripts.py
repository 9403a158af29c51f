"""Typed wrappers around the Lua scripts in ``redray/lua``.

Each script is registered once per client with ``register_script`` (EVALSHA,
reloaded transparently after SCRIPT FLUSH). The wrappers build every key the
script touches and pass it through KEYS; the scripts never build key names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from .constants import MAX_DEAD_LETTERS, Keys
from .exceptions import RaySystemError


def _source(name: str) -> str:
    return resources.files("redray.lua").joinpath(f"{name}.lua").read_text()


class Batch:
    """Script calls (and plain commands) sent in one round trip.

    It writes the commands straight to one pooled connection and reads the
    raw replies: redis-py's ``Pipeline`` adds a ``SCRIPT EXISTS`` round trip
    whenever it holds a script and about 40 µs of bookkeeping per execution,
    which is the hot path's whole budget. Calls the server answers with
    NOSCRIPT (after a SCRIPT FLUSH or a restart) are re-run in order once the
    scripts are loaded again. Replies are raw (lists, not dicts or tuples).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._commands: list[tuple[Any, ...]] = []
        self._calls: list[tuple[Script, list[str], list[Any]] | None] = []

    def evalsha(self, script: Script, keys: list[str], args: list[Any]) -> None:
        self._commands.append(("EVALSHA", script.sha, len(keys), *keys, *args))
        self._calls.append((script, keys, args))

    def command(self, *args: Any) -> None:
        self._commands.append(args)
        self._calls.append(None)

    def __len__(self) -> int:
        return len(self._calls)

    def execute(self) -> list[Any]:
        commands, self._commands = self._commands, []
        calls, self._calls = self._calls, []
        if not commands:
            return []
        pool = self.client.connection_pool
        conn = pool.get_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command(conn.pack_commands(commands), check_health=False)  # type: ignore[no-untyped-call]
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as err:
                    replies.append(err)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                call = calls[i]
                assert call is not None
                script, keys, args = call
                replies[i] = script(keys=keys, args=args)  # loads the script, then retries
            elif isinstance(reply, redis.ResponseError):
                raise RaySystemError(f"Redis refused a batched call: {reply}") from reply
        return replies


@dataclass
class Claimed:
    task_id: str
    spec: bytes
    reservation: str


@dataclass
class ReturnValue:
    """One result of a task, ready to publish."""

    object_id: str
    #: small record data (``d`` field), or None when the value was staged
    data: bytes | None
    #: attempt tag of the staging key, for large values
    staged_attempt: str | None = None


#: The owner of a task nobody waits for (an actor's creation task, an
#: unreadable spec): complete.lua then pushes no notice.
NO_OWNER = "-"


class Scripts:
    """The scripts of one cluster, bound to one client."""

    NOTICE_LIMIT = 4096

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._submit = client.register_script(_source("submit"))
        self._claim = client.register_script(_source("claim"))
        self._complete = client.register_script(_source("complete"))
        self._subscribe = client.register_script(_source("subscribe"))
        self._cancel = client.register_script(_source("cancel"))
        self._requeue = client.register_script(_source("requeue"))
        self._create_actor = client.register_script(_source("create_actor"))
        self._actor_call = client.register_script(_source("actor_call"))
        self._actor_ready = client.register_script(_source("actor_ready"))
        self._actor_dead = client.register_script(_source("actor_dead"))
        self._queue_take = client.register_script(_source("queue_take"))
        self.load()

    def load(self) -> None:
        """Load every script now, so a batch never meets NOSCRIPT for one
        script and not for another (which would reorder their effects)."""
        scripts = [
            self._submit,
            self._claim,
            self._complete,
            self._subscribe,
            self._cancel,
            self._requeue,
            self._create_actor,
            self._actor_call,
            self._actor_ready,
            self._actor_dead,
            self._queue_take,
        ]
        with self.client.pipeline(transaction=False) as pipe:
            for script in scripts:
                pipe.script_load(script.script)
            shas = pipe.execute()
        for script, sha in zip(scripts, shas):
            script.sha = sha if isinstance(sha, str) else sha.decode()

    def _run(
        self, script: Script, keys: list[str], args: list[Any], pipe: Batch | None = None
    ) -> Any:
        if pipe is not None:
            pipe.evalsha(script, keys, args)
            return None
        batch = Batch(self.client)
        batch.evalsha(script, keys, args)
        return batch.execute()[0]

    def batch(self) -> Batch:
        return Batch(self.client)

    # -- submit ------------------------------------------------------------------
    def submit(
        self,
        job_id: str,
        tasks: Sequence[tuple[str, str, bytes, Sequence[str]]],
        pipe: Batch | None = None,
    ) -> Any:
        """Register tasks ``(task id, shape, spec, input object ids)``."""
        k = self.keys
        index: dict[str, int] = {}
        dep_keys: list[str] = []
        argv: list[Any] = []
        for _tid, _shape, _spec, deps in tasks:
            for oid in deps:
                if oid not in index:
                    index[oid] = len(index) + 1
                    dep_keys.append(k.obj(oid))
                    dep_keys.append(k.waiters(oid))
        argv = [k.ready_channel, len(index), len(tasks)]
        for tid, shape, spec, deps in tasks:
            # submit.lua counts each distinct input once
            distinct = sorted({index[oid] for oid in deps})
            argv.extend((tid, shape, spec, len(distinct)))
            argv.extend(distinct)
        keys = [
            k.task_spec,
            k.task_state,
            k.deps_left,
            k.ready,
            k.seq,
            k.job_tasks(job_id),
            k.job_keys(job_id),
            *dep_keys,
        ]
        return self._run(self._submit, keys, argv, pipe)

    # -- claim -------------------------------------------------------------------
    def claim_keys(self, node_id: str) -> list[str]:
        k = self.keys
        return [
            k.ready,
            k.task_spec,
            k.task_state,
            k.node_avail(node_id),
            k.node_gpus(node_id),
            k.node_running(node_id),
            k.dead_letters,
        ]

    def claim(
        self, node_id: str, worker_id: str, shapes: Sequence[str], pipe: Batch | None = None
    ) -> Any:
        argv = [node_id, worker_id, MAX_DEAD_LETTERS, *shapes]
        return self._run(self._claim, self.claim_keys(node_id), argv, pipe)

    @staticmethod
    def parse_claim(reply: Any) -> Claimed | None:
        if not reply:
            return None
        tid, spec, reservation = reply
        return Claimed(tid.decode(), spec, reservation.decode())

    # -- complete ----------------------------------------------------------------
    def complete(
        self,
        *,
        task_id: str,
        job_id: str,
        owner: str,
        node_id: str | None,
        reservation: str,
        returns: Sequence[ReturnValue],
        pipe: Batch | None = None,
        final: bool = True,
    ) -> Any:
        k = self.keys
        node = node_id or "-"
        keys = [
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
            k.cancelled,
        ]
        argv: list[Any] = [
            task_id,
            job_id,
            reservation,
            k.ready_channel,
            len(returns),
            -1 if owner == NO_OWNER else self.NOTICE_LIMIT,
            "f" if final else "y",
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
        return self._run(self._complete, keys, argv, pipe)

    # -- subscribe -----------------------------------------------------------------
    def subscribe(self, worker_id: str, object_ids: Sequence[str], subscribe: bool) -> list[bool]:
        k = self.keys
        keys: list[str] = []
        for oid in object_ids:
            keys.append(k.obj(oid))
            keys.append(k.waiters(oid))
        reply = self._run(self._subscribe, keys, ["@" + worker_id, "1" if subscribe else "0"])
        return [bool(x) for x in reply]

    # -- cancel --------------------------------------------------------------------
    def cancel(self, task_id: str) -> str:
        k = self.keys
        reply = self._run(self._cancel, [k.task_state, k.deps_left, k.ready], [task_id])
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    # -- requeue -------------------------------------------------------------------
    def requeue(self, node_id: str, task_id: str, max_retries: int, shape: str = "") -> int:
        k = self.keys
        keys = [
            k.task_state,
            k.ready,
            k.seq,
            k.node_avail(node_id),
            k.node_gpus(node_id),
            k.node_running(node_id),
            k.retries,
        ]
        return int(self._run(self._requeue, keys, [task_id, max_retries, k.ready_channel, shape]))

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
        """Register an actor; returns ('created'|'exists', actor id)."""
        from .constants import MAILBOX_GROUP

        k = self.keys
        argv: list[Any] = [name_key, actor_id, "1" if detached else "0", MAILBOX_GROUP]
        for key, value in fields.items():
            argv.extend((key, value))
        reply = self._run(
            self._create_actor,
            [
                k.actor_names,
                k.actor(actor_id),
                k.mailbox(actor_id),
                k.job_actors(job_id),
                k.job_keys(job_id),
                k.actors,
            ],
            argv,
        )
        return reply[0].decode(), reply[1].decode()

    def actor_call(self, calls: Sequence[tuple[str, bytes]], pipe: Batch | None = None) -> Any:
        """Append ``(actor id, spec)`` calls to their mailboxes (see actor_call.lua)."""
        k = self.keys
        keys: list[str] = []
        for actor_id, _spec in calls:
            keys.append(k.actor(actor_id))
            keys.append(k.mailbox(actor_id))
        return self._run(self._actor_call, keys, [spec for _aid, spec in calls], pipe)

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
        k = self.keys
        argv: list[Any] = [task_id, release_cpu, keep]
        for key, value in fields.items():
            argv.extend((key, value))
        keys = [k.actor(actor_id), k.node_avail(node_id), k.node_running(node_id)]
        return bool(self._run(self._actor_ready, keys, argv))

    def actor_dead(
        self, *, actor_id: str, job_id: str, death: bytes, name_key: str
    ) -> tuple[str, str, str]:
        """Mark an actor dead; returns (previous state, node id, worker id) of its
        process, or of its creation task while ``__init__`` runs ('' when none)."""
        k = self.keys
        keys = [
            k.actor(actor_id),
            k.actor_names,
            k.job_actors(job_id or "-"),
            k.actors,
            k.task_state,
        ]
        reply = self._run(self._actor_dead, keys, [actor_id, death, name_key])
        state, node, worker = (x.decode() if isinstance(x, bytes) else str(x) for x in reply)
        return state, node, worker

    # -- util.queue -------------------------------------------------------------------
    def queue_take(self, items_key: str, n: int) -> list[bytes] | None:
        """Exactly ``n`` items from a Queue's list, or None if it holds fewer."""
        reply = self._run(self._queue_take, [items_key], [n])
        return list(reply) if reply else None
