"""An executor turned actor: runs ``__init__`` once, then serves the mailbox.

The mailbox is a Redis stream read with XREADGROUP (consumer group
``actor``); an entry is acknowledged and deleted by the same ``complete.lua``
call that publishes its results, so "published" and "acknowledged" are one
fact, and a synchronous actor sends that call together with its next
blocking read. After a failed or timed-out read (its reply, and the entries
it delivered, may be lost) the actor first reads the entries already
delivered to it, in order, before new ones. Entries a previous incarnation
had read but not finished are claimed back after a restart and retried up
to ``max_task_retries`` times.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import select
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from redray import dead_letters, ids, rejections
from redray import task_spec as ts
from redray.actor import ActorExit
from redray.actor_lifecycle import finalize
from redray.connections import BLOCK_MARGIN, TRANSIENT, Batch, blocking_call
from redray.constants import MAILBOX_GROUP
from redray.context import ActorContext, TaskContext
from redray.exceptions import (
    ActorDiedError,
    ActorOutOfMemoryError,
    AsyncioActorExit,
    RayTaskError,
    TaskCancelledError,
)
from redray.recovery import error_returns
from redray.resources import from_units, memory_limit, parse_reservation
from redray.scripts import Claimed, ReturnValue
from redray.serialization import KIND_ERROR, KIND_VALUE
from redray.signing import SignatureError

from . import concurrency_groups as cg
from . import slots as sl
from .execution import (
    DependencyFailed,
    Host,
    apply_env,
    arguments,
    generator_returns,
    value_frames,
)

log = logging.getLogger("redray.actor")

READ_BLOCK_MS = 2000
READ_COUNT = 64
#: calls a concurrent actor reads ahead of their results, at least
MAX_IN_FLIGHT = 10_000
TERMINATE = "__ray_terminate__"


def class_method(instance: Any, name: str) -> Any:
    """The method ``name`` of the actor's class, bound to ``instance``: an
    instance attribute of that name does not hide it (as in Ray, which calls
    the methods the class defines)."""
    if name == "__ray_ready__":
        return lambda: True
    if name == "__ray_call__":
        return lambda fn, *args, **kwargs: fn(instance, *args, **kwargs)
    cls = type(instance)
    static = inspect.getattr_static(cls, name, None)
    if static is None:
        return getattr(instance, name)  # e.g. supplied by __getattr__
    if isinstance(static, (staticmethod, classmethod)):
        return getattr(cls, name)
    attr = getattr(cls, name)
    return attr.__get__(instance, cls) if hasattr(attr, "__get__") else attr


class RetryPolicy(NamedTuple):
    """How often a call may be run again: ``retries`` more times (-1: no
    limit) after the actor died running it, and after it raised an exception
    ``exceptions`` allows (True: any; a tuple: those classes; False: none)."""

    retries: int
    exceptions: bool | tuple[type[BaseException], ...]

    def allows(self, exc: BaseException, retried: int) -> bool:
        if self.retries != -1 and retried >= self.retries:
            return False
        if isinstance(self.exceptions, tuple):
            return isinstance(exc, self.exceptions)
        return self.exceptions is True


class _Terminate(Exception):
    pass


class Done(NamedTuple):
    """A finished mailbox entry, ready to publish and acknowledge."""

    entry_id: bytes
    spec: ts.TaskSpec | None
    returns: list[ReturnValue]
    terminate: bool = False


class ActorRunner:
    def __init__(self, executor: Host, claimed: Claimed, spec: ts.TaskSpec) -> None:
        self.ex = executor
        self.rt = executor.runtime
        self.keys = self.rt.keys
        self.claimed = claimed
        self.spec = spec
        extra = spec.extra or {}
        self.actor_id: str = extra["actor"]
        self.extra = extra
        self.mailbox = self.keys.mailbox(self.actor_id)
        self.consumer = executor.worker_id
        self.max_task_retries = int(extra.get("max_task_retries") or 0)
        self.instance: Any = None
        #: calls cancel() reached (heard on the actor's channel)
        self.cancelled: set[str] = set()
        #: running async calls by task id, with their loop, to cancel through asyncio
        self.tasks: dict[str, tuple[asyncio.Task[Any], asyncio.AbstractEventLoop]] = {}
        self.control: Any = None
        self._poll_lock = threading.Lock()
        #: __ray_terminate__ was reached: later entries stay in the mailbox,
        #: where finalize() fails them with ActorDiedError
        self.terminating = False
        #: how the previous incarnation ended (from the record), and whether for memory
        self.last_exit: tuple[str, bool] = ("", False)
        #: entries being run now (threaded and async actors): not re-read
        self.running: set[bytes] = set()
        #: a read failed: entries may have been delivered without reaching us
        self.reread = False
        #: why the actor ends when a call asks it to (finalize's message)
        self.exit_reason = "__ray_terminate__ was called"

    # -- life ------------------------------------------------------------------------
    def run(self) -> None:
        ex, rt, spec = self.ex, self.rt, self.spec
        units, gpus = parse_reservation(self.claimed.reservation)
        # memory= is held (and enforced) for the actor's whole life
        ex.set_state(sl.ACTOR, spec.task_id, self.actor_id, memory_limit(units))
        apply_env(spec, gpus, ex.totals)  # for the actor's whole life
        rt.job_id = spec.job_id
        rt.namespace = self.extra.get("namespace", "")
        assert rt.inbox is not None
        rt.inbox.on_block = rt.inbox.on_unblock = None  # an actor keeps what it holds while blocked
        rt.current_actor = ActorContext(
            actor_id=self.actor_id,
            name=self.extra.get("name", ""),
            namespace=self.extra.get("namespace", ""),
            class_name=spec.function_name,
        )
        rt.current_task = TaskContext(
            task_id=spec.task_id,
            job_id=spec.job_id,
            node_id=ex.node_id,
            worker_id=ex.worker_id,
            resources={k: from_units(v) for k, v in units.items()},
            gpu_ids=list(gpus),
            function_name=spec.function_name,
        )
        try:
            cls = ex.functions.load(spec)
            args, kwargs = arguments(rt, spec)
            self.instance = cls(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the actor dies with this cause
            cause = RayTaskError(
                f"{spec.function_name}.__init__", traceback.format_exc(), exc, pid=os.getpid()
            )
            err = ActorDiedError(
                f"The actor {spec.function_name} ({self.actor_id}) died because its __init__ "
                f"raised {type(exc).__name__}: {exc}\n{cause.traceback_str}",
                cause=cause,
            )
            finalize(
                rt.cluster,
                self.actor_id,
                err,
                node_id=ex.node_id,
                task_id=spec.task_id,
                worker_id=ex.worker_id,
            )
            return
        release = int(self.extra.get("release_cpu") or 0)
        keep = self.claimed.reservation
        kept = dict(units)
        if release:
            kept["CPU"] = kept.get("CPU", 0) - release
            shape = ",".join(f"{k}={v}" for k, v in sorted(kept.items()) if v > 0)
            keep = shape + ";" + self.claimed.reservation.partition(";")[2]
        # the reservation record the actor keeps while it lives
        keep = f"{ex.worker_id} {keep} 0"
        rt.current_actor.resources = {k: from_units(v) for k, v in kept.items() if v > 0}
        rt.current_actor.gpu_ids = list(gpus)
        alive = rt.scripts.actor_ready(
            actor_id=self.actor_id,
            node_id=ex.node_id,
            task_id=spec.task_id,
            release_cpu=release,
            keep=keep,
            fields={"node": ex.node_id, "worker": ex.worker_id, "pid": os.getpid()},
        )
        if not alive:
            return
        rt.current_task = None
        self.listen()
        try:
            self.recover()
            while True:
                try:
                    self.serve_mailbox()
                    break
                except TRANSIENT as exc:
                    log.warning(
                        "actor %s: Redis unreachable (%s); reconnecting", self.actor_id, exc
                    )
                    self.reread = True
                    self.ex.wait_for_redis()
                    self.listen()
        except _Terminate:
            finalize(
                rt.cluster,
                self.actor_id,
                ActorDiedError(
                    f"The actor {spec.function_name} ({self.actor_id}) exited: {self.exit_reason}."
                ),
                node_id=ex.node_id,
                task_id=spec.task_id,
                worker_id=ex.worker_id,
            )

    def listen(self) -> None:
        """(Re)subscribe to the actor's wake channel, then read its cancel set:
        a cancel() made while we were not listening is only there."""
        with self._poll_lock:
            old, self.control = self.control, None
            if old is not None:
                try:
                    old.close()
                except Exception:  # noqa: BLE001 - it is being replaced
                    pass
            try:
                control = self.rt.cluster.single.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                control.subscribe(self.keys.actor_channel(self.actor_id))
                self.control = control
            except TRANSIENT:
                return  # the next reconnect tries again
            early: Any = self.rt.client.smembers(self.keys.actor_cancelled(self.actor_id))
            self.cancelled.update(m.decode(errors="replace") for m in early)

    # -- mailbox -----------------------------------------------------------------------
    def recover(self) -> None:
        """Finish what an earlier incarnation read but did not acknowledge."""
        client = self.rt.client
        try:
            pending = client.xpending_range(self.mailbox, MAILBOX_GROUP, "-", "+", 10_000)
        except Exception:  # noqa: BLE001 - no group: nothing to recover
            return
        if not pending:
            return
        deliveries = {p["message_id"]: p["times_delivered"] for p in pending}
        ids_: list[Any] = [p["message_id"] for p in pending]
        claimed: Any = client.xclaim(self.mailbox, MAILBOX_GROUP, self.consumer, 0, ids_)
        last: Any = client.hmget(self.keys.actor(self.actor_id), ["exit", "exit_oom"])
        self.last_exit = (last[0] or b"").decode(errors="replace"), bool(last[1])
        for entry_id, fields in claimed:
            # delivered n times = run n times, each ended by a crash: n - 1 retries used
            retries_used = int(deliveries.get(entry_id, 1)) - 1
            spec = self._decode(entry_id, fields)
            if spec is None:
                self._publish([Done(entry_id, None, [])])
                continue
            budget = self.retry_policy(spec).retries
            if budget != -1 and retries_used >= budget:
                self._fail_entry(entry_id, spec, budget)
            else:
                self._publish(self._execute_all([(entry_id, fields)]))

    def retry_policy(self, spec: ts.TaskSpec) -> RetryPolicy:
        """The call's ``max_task_retries`` and ``retry_exceptions``, as Ray
        takes them: from ``.options()`` on the method, else from its
        ``@method(...)``, else the actor's ``max_task_retries`` and no
        retries on exceptions."""
        extra = spec.extra or {}
        opts = cg.method_options(type(self.instance), str(extra.get("method", "")))
        retries = extra.get("max_task_retries", opts.get("max_task_retries"))
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
            retries = self.max_task_retries
        exceptions = extra.get("retry_exceptions", opts.get("retry_exceptions", False))
        if isinstance(exceptions, list):
            exceptions = tuple(exceptions)
        if not isinstance(exceptions, (bool, tuple)):
            exceptions = False
        return RetryPolicy(retries, exceptions)

    def _decode(self, entry_id: bytes, fields: dict[bytes, bytes]) -> ts.TaskSpec | None:
        """The call spec of a mailbox entry; None (and a dead letter) if it has none."""
        raw = fields.get(b"s", b"")
        try:
            return ts.open_spec(self.rt.signer, raw, actor_id=self.actor_id)
        except SignatureError as exc:
            why = f"the call failed its signature check in actor {self.actor_id}: {exc}"
            dead_letters.record(
                self.rt.client,
                self.keys,
                self.mailbox,
                why,
                raw,
                actor=self.actor_id,
                entry=entry_id.decode(errors="replace"),
            )
            rejections.report(self.rt.cluster.single, self.keys, raw, "", why)
            return None
        except ValueError as exc:
            dead_letters.record(
                self.rt.client,
                self.keys,
                self.mailbox,
                f"{exc} (fields: {sorted(k.decode(errors='replace') for k in fields)})",
                raw,
                actor=self.actor_id,
                entry=entry_id.decode(errors="replace"),
            )
            return None

    def _fail_entry(self, entry_id: bytes, spec: ts.TaskSpec, budget: int) -> None:
        how, oom = self.last_exit
        death = ActorOutOfMemoryError if oom else ActorDiedError
        err = death(
            f"The actor {self.spec.function_name} ({self.actor_id}) died while running "
            f"{spec.function_name}{f' ({how})' if how else ''}, and "
            f"max_task_retries={budget} allows no more attempts."
        )
        oids = [ids.return_id(spec.task_id, i) for i in ts.result_indexes(spec)]
        self._publish([Done(entry_id, spec, error_returns(self.rt.cluster, oids, err))])

    def _read_command(self) -> tuple[Any, ...]:
        return (
            "XREADGROUP",
            "GROUP",
            MAILBOX_GROUP,
            self.consumer,
            "COUNT",
            READ_COUNT,
            "BLOCK",
            READ_BLOCK_MS,
            "STREAMS",
            self.mailbox,
            ">",
        )

    def _read(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The next entries: first those already delivered to this process
        after a read failed (its reply may have carried them), then new ones.
        A read is never re-sent blindly (it moves entries to our pending list)."""
        if self.reread:
            pending = self._read_pending()
            self.reread = False
            if pending:
                return pending
        try:
            reply = blocking_call(
                self.rt.cluster.single_lane, READ_BLOCK_MS / 1000, *self._read_command()
            )
        except TRANSIENT:
            self.reread = True
            raise
        return _entries(reply)

    def _read_pending(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Entries delivered to this consumer and not yet published, in order,
        less those running now (threaded and async actors)."""
        pipe = Batch(self.rt.cluster.single_lane)
        pipe.command(
            "XREADGROUP", "GROUP", MAILBOX_GROUP, self.consumer, "STREAMS", self.mailbox, "0"
        )
        entries = _entries(pipe.execute()[0])
        return [(e, f) for e, f in entries if e not in self.running and f]

    def poll_cancels(self, timeout: float = 0) -> None:
        """Apply 'cancel <task id>' messages heard on the actor's channel.

        One reader at a time: the threads of a threaded actor all poll, and two
        readers of one connection can each see it readable while only one finds
        the message, leaving the other blocked in a read (its call's result
        then never goes out)."""
        with self._poll_lock:
            self._poll_cancels(timeout)

    def _poll_cancels(self, timeout: float) -> None:
        if timeout == 0 and not self._control_readable():
            return
        while self.control is not None:
            try:
                msg = self.control.get_message(timeout=timeout)
            except Exception:  # noqa: BLE001 - the channel is best effort
                return
            if msg is None:
                return
            data = msg.get("data")
            if isinstance(data, bytes) and data.startswith(b"cancel "):
                tid = data[7:].decode(errors="replace")
                self.cancelled.add(tid)
                running = self.tasks.get(tid)
                if running is not None:
                    task, loop = running
                    loop.call_soon_threadsafe(task.cancel)

    def _control_readable(self) -> bool:
        """Whether a message may be waiting on the actor's channel: one poll(2)
        of its socket, run before every call, instead of redis-py's read path
        (each loop above reads until nothing is buffered in the client)."""
        sock = getattr(getattr(self.control, "connection", None), "_sock", None)
        if sock is None:
            return self.control is not None  # not connected yet: take the slow path
        try:
            return bool(select.select([sock], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _cancelled(self, spec: ts.TaskSpec) -> list[ReturnValue]:
        self.cancelled.discard(spec.task_id)
        return self._all(spec, KIND_ERROR, self.rt.error_frames(TaskCancelledError(spec.task_id)))

    def _execute_all(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Done]:
        """Run calls in order, none after ``__ray_terminate__``."""
        done = []
        for entry_id, fields in entries:
            if self.terminating:
                break
            done.append(self._execute(entry_id, fields))
        return done

    def _terminate(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        self.terminating = True
        return Done(entry_id, spec, self._encode(spec, [None] * len(ts.result_indexes(spec))), True)

    def _execute(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Done:
        """Run one call."""
        spec = self._decode(entry_id, fields)
        if spec is None:
            return Done(entry_id, None, [])
        return self._execute_spec(entry_id, spec)

    def _execute_spec(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        method_name = (spec.extra or {}).get("method", "")
        if method_name == TERMINATE:
            return self._terminate(entry_id, spec)
        self.poll_cancels()
        if spec.task_id in self.cancelled:
            return Done(entry_id, spec, self._cancelled(spec))
        try:
            return Done(entry_id, spec, self._call(spec, method_name))
        except ActorExit:
            return self._exit(entry_id, spec)

    def _exit(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        """The method called ``exit_actor()``: the actor ends after this call,
        which, like those queued behind it, raises ActorDiedError (as in Ray)."""
        self.terminating = True
        self.exit_reason = f"{spec.function_name} called exit_actor()"
        err = ActorDiedError(
            f"The actor {self.spec.function_name} ({self.actor_id}) exited: {self.exit_reason}."
        )
        return Done(entry_id, spec, self._all(spec, KIND_ERROR, self.rt.error_frames(err)), True)

    def _call(self, spec: ts.TaskSpec, method_name: str) -> list[ReturnValue]:
        rt = self.rt
        held = rt.current_actor
        rt.current_task = TaskContext(
            task_id=spec.task_id,
            job_id=spec.job_id,
            node_id=self.ex.node_id,
            worker_id=self.ex.worker_id,
            resources=dict(held.resources) if held else {},
            gpu_ids=list(held.gpu_ids) if held else [],
            function_name=spec.function_name,
        )
        try:
            try:
                method = class_method(self.instance, method_name)
                if spec.deps:
                    rt.wait_ready(spec.deps, len(spec.deps), None)
                args, kwargs = arguments(rt, spec)
            except Exception as exc:  # noqa: BLE001
                if isinstance(exc, DependencyFailed):
                    return self._all(spec, KIND_ERROR, exc.frames)
                raise
            result = self._run_method(spec, method, args, kwargs)
            if spec.num_returns == "streaming":
                return self._stream(spec, result)
            return self._results(spec, result)
        except Exception as exc:  # noqa: BLE001 - the call fails, the actor lives on
            return self._failed(spec, exc)
        finally:
            rt.current_task = None

    def _run_method(
        self, spec: ts.TaskSpec, method: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Call the method, again while its retry policy allows the exception
        it raised (Ray's ``retry_exceptions`` for actor methods)."""
        retried = 0
        while True:
            try:
                result = method(*args, **kwargs)
                return asyncio.run(result) if inspect.iscoroutine(result) else result
            except Exception as exc:
                if not self._may_retry(spec, exc, retried):
                    raise
                retried += 1

    async def _run_method_async(
        self, spec: ts.TaskSpec, method: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        retried = 0
        while True:
            try:
                result = method(*args, **kwargs)
                return (await result) if inspect.isawaitable(result) else result
            except Exception as exc:
                if not self._may_retry(spec, exc, retried):
                    raise
                retried += 1

    def _may_retry(self, spec: ts.TaskSpec, exc: BaseException, retried: int) -> bool:
        if isinstance(exc, AsyncioActorExit):
            return False  # exit_actor() in an async actor: never retried
        policy = self.retry_policy(spec)
        if not policy.allows(exc, retried):
            return False
        left = "unlimited" if policy.retries == -1 else str(policy.retries - retried - 1)
        log.warning(
            "%s (task %s) raised %s: %s; running it again (%s retries left)",
            spec.function_name, spec.task_id, type(exc).__name__, exc, left,
        )  # fmt: skip
        return True

    def _all(self, spec: ts.TaskSpec, kind: bytes, frames: list[Any]) -> list[ReturnValue]:
        """The same record for every result of a call (an error, usually)."""
        return self._returns(spec, [(kind, frames)] * len(ts.result_indexes(spec)))

    def _stream(self, spec: ts.TaskSpec, gen: Any) -> list[ReturnValue]:
        """A generator method: publish each value as it comes, then the end record."""
        count = 0
        try:
            for value in gen:
                count += 1
                self._publish_item(spec, count, *self._value_frames(spec, count, value))
        except Exception as exc:  # noqa: BLE001 - delivered after the values before it
            count += 1
            err = RayTaskError(spec.function_name, _traceback(), exc, pid=os.getpid())
            self._publish_item(spec, count, KIND_ERROR, self.rt.error_frames(err))
        return self._returns(spec, [(KIND_VALUE, self.rt.serializer.dumps(count))])

    async def _stream_async(self, spec: ts.TaskSpec, gen: Any, io: Any) -> list[ReturnValue]:
        loop = asyncio.get_running_loop()
        count = 0
        try:
            async for value in gen:
                count += 1
                frames = self._value_frames(spec, count, value)
                await loop.run_in_executor(io, self._publish_item, spec, count, *frames)
        except Exception as exc:  # noqa: BLE001 - delivered after the values before it
            count += 1
            err = RayTaskError(spec.function_name, _traceback(), exc, pid=os.getpid())
            await loop.run_in_executor(
                io, self._publish_item, spec, count, KIND_ERROR, self.rt.error_frames(err)
            )
        return self._returns(spec, [(KIND_VALUE, self.rt.serializer.dumps(count))])

    def _publish_item(self, spec: ts.TaskSpec, index: int, kind: bytes, frames: list[Any]) -> None:
        ret = self.rt.return_value(ids.return_id(spec.task_id, index), kind, frames, self.consumer)
        self.rt.settle()
        self.rt.scripts.complete(
            task_id=spec.task_id,
            job_id=spec.job_id,
            owner=spec.owner,
            node_id=None,
            returns=[ret],
            final=False,
            retry=True,
        )

    def _results(self, spec: ts.TaskSpec, result: Any) -> list[ReturnValue]:
        """The call's results; a generator method with ``num_returns=n``
        keeps the values it yielded before it raised or ended early, and the
        rest hold the error (as in Ray)."""
        n = spec.num_returns
        if not (isinstance(n, int) and n > 1 and inspect.isgenerator(result)):
            return self._encode(spec, self._split(spec, result))
        got = generator_returns(spec, result, n)
        frames = [self._value_frames(spec, i + 1, v) for i, v in enumerate(got.values)]
        if got.error is not None:
            frames += [(KIND_ERROR, self.rt.error_frames(got.error))] * (n - len(frames))
        return self._returns(spec, frames)

    def _split(self, spec: ts.TaskSpec, result: Any) -> list[Any]:
        n = int(spec.num_returns)
        if n == 0:
            return []
        if n == 1:
            return [result]
        values = list(result)
        if len(values) != n:
            raise ValueError(
                f"Method {spec.function_name} returned {len(values)} values, but num_returns={n}."
            )
        return values

    def _value_frames(self, spec: ts.TaskSpec, index: int, value: Any) -> tuple[bytes, list[Any]]:
        return value_frames(self.rt, spec, index, value)

    def _encode(self, spec: ts.TaskSpec, values: list[Any]) -> list[ReturnValue]:
        return self._returns(
            spec, [self._value_frames(spec, i + 1, value) for i, value in enumerate(values)]
        )

    def _returns(
        self, spec: ts.TaskSpec, results: list[tuple[bytes, list[Any]]]
    ) -> list[ReturnValue]:
        return [
            self.rt.return_value(ids.return_id(spec.task_id, i), kind, frames, self.consumer)
            for i, (kind, frames) in zip(ts.result_indexes(spec), results)
        ]

    def _queue_publish(self, pipe: Batch, done: list[Done]) -> bool:
        """Add each call's publish to ``pipe``: one complete.lua call per entry
        that publishes its results and acknowledges and deletes the entry in one
        atomic step. True if asked to terminate."""
        terminate = False
        for item in done:
            terminate = terminate or item.terminate
            spec = item.spec
            entry = item.entry_id.decode()
            if spec is not None:
                self.rt.scripts.complete(
                    task_id=spec.task_id,
                    job_id=spec.job_id,
                    owner=spec.owner,
                    node_id=None,
                    returns=item.returns,
                    actor_id=self.actor_id,
                    entry_id=entry,
                    pipe=pipe,
                )
            else:
                # unreadable: only acknowledged (it went to the dead letters)
                pipe.command("XACK", self.mailbox, MAILBOX_GROUP, entry)
                pipe.command("XDEL", self.mailbox, entry)
        return terminate

    def _publish(self, done: list[Done]) -> None:
        """Publish results and acknowledge their entries; across a Redis outage
        this is retried (it is idempotent), never re-run: a method call must not
        change the actor's state twice."""
        while True:
            try:
                self.rt.settle()  # nested submissions and puts reach Redis before the results
                pipe = Batch(self.rt.client)
                terminate = self._queue_publish(pipe, done)
                pipe.execute()
                break
            except TRANSIENT:
                self.ex.wait_for_redis()
        for item in done:
            self.running.discard(item.entry_id)
        if terminate:
            raise _Terminate

    def serve_mailbox(self) -> None:
        # calls delivered before an outage but never answered come first
        self.reread = True
        if self.extra.get("is_async"):
            self.serve_async()
        elif (self.extra.get("max_concurrency") or 1) > 1 or self.extra.get("concurrency_groups"):
            self.serve_threaded()
        else:
            self.serve()

    # -- serving -------------------------------------------------------------------------
    def serve(self) -> None:
        """One call at a time, in mailbox order; results go out with the next read."""
        rt = self.rt
        entries = self._read()
        while not self.ex.stopping:
            done = self._execute_all(entries)
            if not done:
                entries = self._read()
                continue
            rt.settle()
            pipe = Batch(rt.cluster.single_lane)
            terminate = self._queue_publish(pipe, done)
            if terminate:
                self._publish(done)
            pipe.command(*self._read_command())
            try:
                reply = pipe.execute(timeout=READ_BLOCK_MS / 1000 + BLOCK_MARGIN)[-1]
            except TRANSIENT:
                # the publish is idempotent: done again; the read may have
                # delivered entries we never saw: they are read back first
                self.reread = True
                self._publish(done)
                entries = self._read()
                continue
            entries = _entries(reply)

    def _dispatch(self, stop: threading.Event, submit: Any) -> None:
        """Read calls and hand each to ``submit(entry_id, spec, group)`` (its
        concurrency group runs it) until the actor stops or terminates.

        At most MAX_IN_FLIGHT calls are read ahead of their results; a group
        with a backlog that large holds up the others' unread calls."""
        sizes = cg.group_sizes(self.extra)
        cls = type(self.instance)
        in_flight = threading.Semaphore(max(MAX_IN_FLIGHT, 2 * sum(sizes.values())))

        def done(_: Any) -> None:
            in_flight.release()

        while not self.ex.stopping and not stop.is_set():
            for entry_id, fields in self._read():
                spec = self._decode(entry_id, fields)
                if spec is None:
                    self._publish([Done(entry_id, None, [])])
                    continue
                in_flight.acquire()
                self.running.add(entry_id)
                submit(entry_id, spec, cg.group_of(cls, spec, sizes)).add_done_callback(done)

    def serve_threaded(self) -> None:
        """Calls run at once on each concurrency group's threads."""
        groups = cg.ThreadGroups(cg.group_sizes(self.extra))
        stop = threading.Event()

        def run_one(entry_id: bytes, spec: ts.TaskSpec) -> None:
            if self.terminating:
                return  # left in the mailbox: finalize() fails it
            try:
                self._publish([self._execute_spec(entry_id, spec)])
            except _Terminate:
                stop.set()

        try:
            self._dispatch(stop, lambda e, spec, g: groups.submit(g, run_one, e, spec))
        finally:
            groups.shutdown()
        if stop.is_set():
            raise _Terminate

    def serve_async(self) -> None:
        """Coroutines run at once on each concurrency group's event loop."""
        groups = cg.LoopGroups(cg.group_sizes(self.extra))
        io = ThreadPoolExecutor(4, thread_name_prefix="redray-actor-io")
        stop, ended = threading.Event(), threading.Event()

        async def handle(entry_id: bytes, spec: ts.TaskSpec) -> None:
            item = await self._execute_async(entry_id, spec, io)
            if item is None:
                self.running.discard(entry_id)
                return
            try:
                await asyncio.get_running_loop().run_in_executor(io, self._publish, [item])
            except _Terminate:
                stop.set()

        def listen() -> None:
            # cancel() of a running coroutine must not wait for the next read
            while not ended.is_set():
                self.poll_cancels(timeout=0.5)

        threading.Thread(target=listen, name="redray-actor-cancel", daemon=True).start()
        try:
            self._dispatch(stop, lambda e, spec, g: groups.submit(g, handle(e, spec)))
        finally:
            groups.shutdown()
            ended.set()
            io.shutdown(wait=False)
        if stop.is_set():
            raise _Terminate

    async def _execute_async(self, entry_id: bytes, spec: ts.TaskSpec, io: Any) -> Done | None:
        if self.terminating:
            return None
        loop = asyncio.get_running_loop()
        method_name = (spec.extra or {}).get("method", "")
        if method_name == TERMINATE:
            return self._terminate(entry_id, spec)
        if spec.task_id in self.cancelled:
            return Done(entry_id, spec, self._cancelled(spec))
        try:
            method = class_method(self.instance, method_name)
            if spec.deps:
                await loop.run_in_executor(io, self.rt.wait_ready, spec.deps, len(spec.deps), None)
            args, kwargs = await loop.run_in_executor(io, arguments, self.rt, spec)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, DependencyFailed):
                return Done(entry_id, spec, self._all(spec, KIND_ERROR, exc.frames))
            return Done(entry_id, spec, self._failed(spec, exc))
        current = asyncio.current_task()
        if current is not None:
            self.tasks[spec.task_id] = (current, loop)
        try:
            result = await self._run_method_async(spec, method, args, kwargs)
            if spec.num_returns == "streaming":
                if inspect.isasyncgen(result):
                    return Done(entry_id, spec, await self._stream_async(spec, result, io))
                return Done(entry_id, spec, self._stream(spec, result))
            return Done(entry_id, spec, self._results(spec, result))
        except asyncio.CancelledError:
            return Done(entry_id, spec, self._cancelled(spec))
        except (AsyncioActorExit, ActorExit):
            return self._exit(entry_id, spec)
        except Exception as exc:  # noqa: BLE001
            return Done(entry_id, spec, self._failed(spec, exc))
        finally:
            self.tasks.pop(spec.task_id, None)

    def _failed(self, spec: ts.TaskSpec, exc: BaseException) -> list[ReturnValue]:
        err = RayTaskError(spec.function_name, _traceback(), exc, pid=os.getpid())
        return self._all(spec, KIND_ERROR, self.rt.error_frames(err))


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Entries of a raw XREADGROUP reply (a Batch does not parse replies); an
    entry deleted while pending has no fields."""
    if not reply:
        return []
    out = []
    for entry_id, flat in reply[0][1]:
        flat = flat or []
        out.append((bytes(entry_id), {bytes(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}))
    return out


def _traceback() -> str:
    return traceback.format_exc()
