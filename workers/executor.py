"""The executor: a pre-started process that claims ready tasks and runs them.

An executor talks to Redis directly: one ``claim.lua`` call takes a task and
reserves its node's slots; when the task is done one pipeline publishes the
results (``complete.lua``) and claims the next task, so a busy executor pays a
single round trip per task. An idle executor blocks on pub/sub until a queue
it can serve stops being empty. Functions are cached by content hash.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import time
import traceback
from typing import Any, NamedTuple

import cloudpickle
import redis

from redray import dead_letters, ids
from redray import task_spec as ts
from redray.context import TaskContext
from redray.exceptions import RaySystemError, RayTaskError, TaskCancelledError
from redray.generator import DynamicObjectRefGenerator
from redray.object_ref import ObjectRef
from redray.resources import from_units, memory_limit, parse_reservation, parse_shape
from redray.runtime import Runtime
from redray.scripts import NO_OWNER, Claimed
from redray.serialization import KIND_ERROR, KIND_VALUE, unpack
from redray.settings import Settings

from . import slots as sl

log = logging.getLogger("redray.executor")

#: An idle executor re-checks the queues this often even without a
#: notification (a safety net: e.g. notifications published while the server
#: was restarting are lost).
IDLE_WAIT = 5.0
#: Pause after an unexpected error, so a persistent one does not spin.
BACKOFF = 1.0
#: Reference-table size above which an executor forgets dead references.
PRUNE_AT = 10_000
#: Functions kept unpickled per executor.
FUNCTION_CACHE = 1024


class Executor:
    def __init__(
        self,
        settings: Settings,
        node_id: str,
        worker_id: str,
        totals: dict[str, int],
        slots: sl.Slots | None = None,
        slot: int = 0,
    ) -> None:
        self.settings = settings
        self.node_id = node_id
        self.worker_id = worker_id
        self.totals = totals
        self.slots = slots
        self.slot = slot
        self.runtime = Runtime(settings, job_id="", worker_id=worker_id, node_id=node_id)
        self.runtime.on_block = self._on_block
        self.runtime.on_unblock = self._on_unblock
        self.keys = self.runtime.keys
        self.scripts = self.runtime.scripts
        self.client = self.runtime.client
        self.functions: dict[str, Any] = {}
        self.shapes: list[str] = []
        self._known_shapes: set[str] = set()
        self.current: Claimed | None = None
        self.current_cpu = 0
        #: bytes the running task declared with memory= (0: no limit)
        self.current_memory = 0
        self.stopping = False
        self.idle = True
        #: KeyboardInterrupt (cancel) may only be raised while this is set
        self.in_user_code = False

    # -- state ---------------------------------------------------------------------
    def _set_state(
        self, state: int, task_id: str = "", actor_id: str = "", memory: int = 0
    ) -> None:
        slots = self.slots
        if slots is not None:
            slots.set_task(self.slot, task_id)
            slots.set_actor(self.slot, actor_id)
            # the agent kills this process if it grows past what was declared
            slots.set_memory_limit(self.slot, memory)
            slots.set_state(self.slot, state)
            # the agent sleeps until it may need another executor
            if state == sl.BLOCKED or (state == sl.RUNNING and not slots.any_idle()):
                slots.poke()

    def _on_block(self) -> None:
        if self.current_cpu:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.keys.node_avail(self.node_id), "CPU", self.current_cpu)
                pipe.publish(self.keys.node_channel(self.node_id), "cpu")
                pipe.execute()
        if self.current is not None:
            self._set_state(sl.BLOCKED, self.current.task_id, memory=self.current_memory)

    def _on_unblock(self) -> None:
        # Taken back even if that over-commits for a moment, as Ray does: the
        # unblocked task must not deadlock waiting for its own CPU.
        if self.current_cpu:
            self.client.hincrby(self.keys.node_avail(self.node_id), "CPU", -self.current_cpu)
        if self.current is not None:
            self._set_state(sl.RUNNING, self.current.task_id, memory=self.current_memory)

    def refresh_shapes(self) -> None:
        raw: Any = self.client.hkeys(self.keys.shapes)
        shapes = []
        for s in raw:
            shape = s.decode(errors="replace")
            self._known_shapes.add(shape)
            try:
                need = parse_shape(shape)
            except ValueError:
                continue  # not a shape redray wrote: no task can be queued under it
            if all(self.totals.get(k, 0) >= v for k, v in need.items()):
                shapes.append(shape)
        self.shapes = shapes

    # -- main loop -------------------------------------------------------------------
    def _subscribe(self) -> Any:
        pubsub = self.runtime.blocking_client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self.keys.ready_channel, self.keys.node_channel(self.node_id))
        return pubsub

    def run(self) -> None:
        """Claim and run tasks until stopped; ride out Redis outages."""
        claimed: Claimed | None = None
        pubsub: Any = None
        try:
            while not self.stopping:
                try:
                    if pubsub is None:
                        pubsub = self._subscribe()
                        self.refresh_shapes()
                        # a claim whose reply was lost in an outage is still ours
                        claimed = self.adopt()
                    self.serve(pubsub, claimed)
                    return
                except redis.ConnectionError as exc:
                    claimed = None
                    log.warning(
                        "executor %s: Redis unreachable (%s); reconnecting", self.worker_id, exc
                    )
                    _close(pubsub)
                    pubsub = None
                    self._wait_for_redis()
        finally:
            self.idle = True
            _close(pubsub)

    def _wait_for_redis(self) -> None:
        delay = 0.1
        while not self.stopping:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def adopt(self) -> Claimed | None:
        """A task claim.lua gave this executor whose reply never arrived."""
        running: Any = self.client.hgetall(self.keys.node_running(self.node_id))
        if not running:
            return None
        tids = list(running)
        states: Any = self.client.hmget(self.keys.task_state, tids)
        mine = f"R{self.node_id} {self.worker_id}".encode()
        for tid, state in zip(tids, states):
            if state == mine:
                spec: Any = self.client.hget(self.keys.task_spec, tid)
                log.warning(
                    "executor %s: resuming task %s claimed before an outage", self.worker_id, tid
                )
                return Claimed(tid.decode(), spec or b"", running[tid].decode())
        return None

    def serve(self, pubsub: Any, claimed: Claimed | None) -> None:
        just_claimed = False
        while not self.stopping:
            if claimed is None:
                self.idle = True
                self._set_state(sl.IDLE)
                # drain notifications that piled up while busy
                stale = drained = False
                while True:
                    msg = pubsub.get_message(timeout=0)
                    if msg is None:
                        break
                    drained = True
                    stale = stale or self._note(msg)
                if stale:
                    self.refresh_shapes()
                # the pipeline that published the last result already tried
                # to claim; only a notification since then is worth a retry
                if not just_claimed or stale or drained:
                    try:
                        claimed = self._claim()
                    except redis.ConnectionError:
                        raise
                    except Exception:  # noqa: BLE001 - e.g. a foreign value at a redray key
                        log.exception("executor %s: claim failed", self.worker_id)
                        time.sleep(BACKOFF)
                        continue
                just_claimed = False
                if claimed is None:
                    msg = pubsub.get_message(timeout=IDLE_WAIT)
                    if msg is None or self._note(msg):
                        self.refresh_shapes()
                    continue
            self.idle = False
            task = claimed
            try:
                claimed = self.run_one(task)
            except redis.ConnectionError:
                raise
            except Exception as exc:  # noqa: BLE001 - bad data must not kill the executor
                log.exception("executor %s: unexpected error; carrying on", self.worker_id)
                if self.stopping:
                    return  # an actor's process: its node restarts or ends the actor
                claimed = self._abandon(task, exc)
            just_claimed = True

    def _note(self, msg: dict[str, Any]) -> bool:
        """True when a notification names a shape we have not seen."""
        data = msg.get("data")
        if isinstance(data, bytes) and msg.get("channel", b"").endswith(b"ready"):
            return data.decode(errors="replace") not in self._known_shapes
        return False

    def _taking_work(self) -> bool:
        # the node stops taking work while its machine is short of memory
        return bool(self.shapes) and not (self.slots is not None and self.slots.paused())

    def _claim(self) -> Claimed | None:
        if not self._taking_work():
            return None
        reply = self.scripts.claim(self.node_id, self.worker_id, self.shapes)
        return self.scripts.parse_claim(reply)

    # -- one task ------------------------------------------------------------------------
    def run_one(self, claimed: Claimed) -> Claimed | None:
        """Run a claimed task, publish its results, and claim the next one."""
        self.current = claimed
        units, gpus = parse_reservation(claimed.reservation)
        self.current_cpu = units.get("CPU", 0)
        self.current_memory = memory_limit(units)
        self._set_state(sl.RUNNING, claimed.task_id, memory=self.current_memory)
        # a cancel() that arrived between the claim and now
        self.runtime.cancel_requested = self.cancel_requested_here()
        try:
            spec = ts.decode(claimed.spec)
        except ValueError as exc:
            dead_letters.record(
                self.client,
                self.keys,
                self.keys.task_spec,
                str(exc),
                claimed.spec,
                task=claimed.task_id,
            )
            return self._finish(claimed, None, [])
        runtime = self.runtime
        if spec.extra and spec.extra.get("actor") and not spec.extra.get("method"):
            from .actor_runner import ActorRunner

            # this process now belongs to the actor, until the actor ends
            try:
                ActorRunner(self, claimed, spec).run()
            finally:
                self.stopping = True
            return None
        runtime.job_id = spec.job_id
        runtime.namespace = spec.namespace
        runtime.current_task = TaskContext(
            task_id=spec.task_id,
            job_id=spec.job_id,
            node_id=self.node_id,
            worker_id=self.worker_id,
            resources={k: from_units(v) for k, v in units.items()},
            gpu_ids=list(gpus),
            function_name=spec.function_name,
        )
        outcome = self.execute(spec, gpus)
        if isinstance(outcome, _Retry):
            # re-queued while the budget lasts; after it, the last error stands
            if self.scripts.requeue(self.node_id, spec.task_id, spec.max_retries) != 0:
                self.current = None
                return self._claim_next()
            outcome = outcome.results
        returns = [
            runtime.return_value(ids.return_id(spec.task_id, i), k, frames, self.worker_id)
            for i, k, frames in outcome
        ]
        return self._finish(claimed, spec, returns)

    def _finish(
        self, claimed: Claimed, spec: ts.TaskSpec | None, returns: list[Any]
    ) -> Claimed | None:
        runtime = self.runtime
        try:
            runtime.settle()
        except Exception:  # noqa: BLE001 - the results still go out
            log.exception("could not flush nested submissions of %s", claimed.task_id)
        pipe = self.scripts.batch()
        self.scripts.complete(
            task_id=claimed.task_id,
            job_id=spec.job_id if spec else "",
            owner=spec.owner if spec else NO_OWNER,
            node_id=self.node_id,
            reservation=claimed.reservation,
            returns=returns,
            pipe=pipe,
        )
        if not self.stopping and self._taking_work():
            self.scripts.claim(self.node_id, self.worker_id, self.shapes, pipe=pipe)
        adopted: Claimed | None = None
        try:
            replies = pipe.execute()
        except redis.ConnectionError:
            # publishing is idempotent (first write wins, the reservation is
            # released once): retry it alone until Redis is back; the claim
            # may have run without its reply reaching us: adopt what it took
            self._publish_until_done(claimed, spec, returns)
            replies = []
            adopted = self.adopt()
        self.current = None
        self.current_cpu = self.current_memory = 0
        runtime.current_task = None
        if runtime.refs.size() > PRUNE_AT:
            runtime.refs.prune()
        self._set_state(sl.IDLE)
        if len(replies) > 1:
            return self.scripts.parse_claim(replies[1])
        return adopted

    def _abandon(self, claimed: Claimed, exc: BaseException) -> Claimed | None:
        """``run_one`` failed outside the task's own code: fail the task for its
        owner (or keep it as a dead letter), give its slots back, claim the next."""
        dead_letters.record(
            self.client,
            self.keys,
            self.keys.task_spec,
            f"the executor failed on this task: {exc!r}",
            claimed.spec,
            task=claimed.task_id,
        )
        try:
            spec = ts.decode(claimed.spec)
            return self._finish(claimed, spec, self._system_error(spec, exc))
        except redis.ConnectionError:
            raise
        except Exception:  # noqa: BLE001 - then at least give the slots back
            log.exception("executor %s: could not fail task %s", self.worker_id, claimed.task_id)
        try:
            return self._finish(claimed, None, [])
        except redis.ConnectionError:
            raise
        except Exception:  # noqa: BLE001 - the release itself fails: carry on
            log.exception("executor %s: could not end task %s", self.worker_id, claimed.task_id)
        self.current = None
        time.sleep(BACKOFF)
        return self._claim_next()

    def _system_error(self, spec: ts.TaskSpec, exc: BaseException) -> list[Any]:
        err = RaySystemError(
            f"The worker could not run {spec.function_name} ({spec.task_id}): {exc!r}"
        )
        frames = self.runtime.error_frames(err)
        return [
            self.runtime.return_value(
                ids.return_id(spec.task_id, i), KIND_ERROR, frames, self.worker_id
            )
            for i in ts.result_indexes(spec)
        ]

    def _publish_until_done(
        self, claimed: Claimed, spec: ts.TaskSpec | None, returns: list[Any]
    ) -> None:
        while True:
            self._wait_for_redis()
            try:
                self.scripts.complete(
                    task_id=claimed.task_id,
                    job_id=spec.job_id if spec else "",
                    owner=spec.owner if spec else NO_OWNER,
                    node_id=self.node_id,
                    reservation=claimed.reservation,
                    returns=returns,
                )
                return
            except redis.ConnectionError:
                if self.stopping:
                    raise

    def _claim_next(self) -> Claimed | None:
        self.current_cpu = self.current_memory = 0
        self._set_state(sl.IDLE)
        self.runtime.current_task = None
        return None if self.stopping else self._claim()

    def execute(self, spec: ts.TaskSpec, gpus: dict[str, int]) -> Any:
        """Run the task; returns [(index, kind, frames)] to publish, or a _Retry.

        Index 1.. are the return values; a streaming generator publishes its
        items as it goes and returns only its end record (index 0).
        """
        runtime = self.runtime
        indexes = ts.result_indexes(spec)

        def fail(kind_frames: list[Any]) -> list[Any]:
            return [(i, KIND_ERROR, kind_frames) for i in indexes]

        try:
            fn = self._function(spec)
            args, kwargs = self._arguments(spec)
        except _DependencyFailed as failed:
            return fail(failed.frames)
        except Exception as exc:  # noqa: BLE001 - reported on the caller's ObjectRef
            err = RayTaskError(spec.function_name, traceback.format_exc(), exc, pid=os.getpid())
            return fail(runtime.error_frames(err))
        saved_env = self._apply_env(spec, gpus)
        runtime.children = []
        streamed = 0
        try:
            if runtime.cancel_requested:
                raise KeyboardInterrupt  # cancelled between claim and start
            self.in_user_code = True
            try:
                result = fn(*args, **kwargs)
                if spec.num_returns in ("streaming", "dynamic"):
                    result = self._drain(spec, result)
                    streamed = len(result)
                elif inspect.isgenerator(result) and isinstance(spec.num_returns, int):
                    result = list(result) if spec.num_returns > 1 else result
            finally:
                self.in_user_code = False
        except KeyboardInterrupt:
            self._cancel_children()
            return fail(runtime.error_frames(TaskCancelledError(spec.task_id)))
        except _StreamFailed as stream_error:
            # the values before the error were published; the error is the next item
            return self._stream_end(spec, stream_error.count, stream_error.error)
        except Exception as exc:  # noqa: BLE001 - becomes the task's error
            if runtime.cancel_requested:
                self._cancel_children()
                return fail(runtime.error_frames(TaskCancelledError(spec.task_id)))
            err = RayTaskError(spec.function_name, _user_traceback(), exc, pid=os.getpid())
            if self._should_retry(spec, exc):
                return _Retry(fail(runtime.error_frames(err)))
            return fail(runtime.error_frames(err))
        finally:
            self._restore_env(saved_env)
        if spec.num_returns == "streaming":
            return self._stream_end(spec, streamed, None)
        if spec.num_returns == "dynamic":
            refs: list[ObjectRef[Any]] = [
                ObjectRef(ids.return_id(spec.task_id, i + 2), None) for i in range(streamed)
            ]
            return self._values(spec, [1], [DynamicObjectRefGenerator(refs)])
        n = int(spec.num_returns)
        if n == 0:
            return []
        values = [result]
        if n > 1:
            try:
                values = list(result)
            except TypeError:
                values = []
            if len(values) != n:
                msg = (
                    f"Task {spec.function_name} returned {_count(result)} values, but "
                    f"num_returns={n}."
                )
                err = RayTaskError(spec.function_name, msg, ValueError(msg), pid=os.getpid())
                return fail(runtime.error_frames(err))
        return self._values(spec, indexes, values)

    def _values(self, spec: ts.TaskSpec, indexes: list[int], values: list[Any]) -> list[Any]:
        out = []
        for i, value in zip(indexes, values):
            out.append((i, *self._frames(spec, i, value)))
        return out

    def _frames(self, spec: ts.TaskSpec, index: int, value: Any) -> tuple[bytes, list[Any]]:
        try:
            return KIND_VALUE, self.runtime.serializer.dumps(value)
        except Exception as exc:  # noqa: BLE001
            msg = (
                f"Could not serialize return value #{index} ({type(value).__name__}) of "
                f"{spec.function_name}: {exc!r}"
            )
            err = RayTaskError(spec.function_name, msg, TypeError(msg), pid=os.getpid())
            return KIND_ERROR, self.runtime.error_frames(err)

    def _drain(self, spec: ts.TaskSpec, gen: Any) -> list[int]:
        """Publish a generator's values one by one, as they are produced."""
        if not inspect.isgenerator(gen):
            raise TypeError(
                f"{spec.function_name} has num_returns={spec.num_returns!r} but did not return "
                f"a generator (it returned {type(gen).__name__})."
            )
        first = 2 if spec.num_returns == "dynamic" else 1
        published: list[int] = []
        while True:
            try:
                value = next(gen)
            except StopIteration:
                return published
            except Exception as exc:  # noqa: BLE001 - delivered in order, after the values
                if spec.num_returns == "dynamic":
                    raise
                err = RayTaskError(spec.function_name, _user_traceback(), exc, pid=os.getpid())
                raise _StreamFailed(len(published), err) from None
            index = first + len(published)
            self.publish_item(spec, index, *self._frames(spec, index, value))
            published.append(index)

    def publish_item(self, spec: ts.TaskSpec, index: int, kind: bytes, frames: list[Any]) -> None:
        oid = ids.return_id(spec.task_id, index)
        ret = self.runtime.return_value(oid, kind, frames, self.worker_id)
        self.runtime.settle()
        self.scripts.complete(
            task_id=spec.task_id,
            job_id=spec.job_id,
            owner=spec.owner,
            node_id=self.node_id,
            reservation="",
            returns=[ret],
            final=False,
        )

    def _stream_end(self, spec: ts.TaskSpec, count: int, error: RayTaskError | None) -> list[Any]:
        if error is not None:
            count += 1
            self.publish_item(spec, count, KIND_ERROR, self.runtime.error_frames(error))
        return [(0, KIND_VALUE, self.runtime.serializer.dumps(count))]

    def cancel_requested_here(self) -> bool:
        """Whether the node was asked to cancel the task this executor runs."""
        slots, current = self.slots, self.current
        return (
            slots is not None
            and current is not None
            and slots.cancel_request(self.slot) == current.task_id
        )

    def _cancel_children(self) -> None:
        """cancel(recursive=True): the tasks this task submitted go too."""
        if self.slots is not None and not self.slots.cancel_recursive(self.slot):
            return
        for child in self.runtime.children:
            try:
                self.runtime.cancel(ids.return_id(child, 1), force=False)
            except Exception:  # noqa: BLE001 - best effort
                log.debug("could not cancel child task %s", child)

    def _should_retry(self, spec: ts.TaskSpec, exc: BaseException) -> bool:
        retry = spec.retry_exceptions
        if not retry or spec.max_retries == 0:
            return False
        if retry is True:
            return True
        return isinstance(exc, tuple(retry))

    def _function(self, spec: ts.TaskSpec) -> Any:
        fn = self.functions.get(spec.function_digest)
        if fn is None:
            blob = self.client.get(spec.function_key)
            if blob is None:
                raise RaySystemError(
                    f"The code of {spec.function_name} is gone from Redis (its job ended?)."
                )
            try:
                fn = cloudpickle.loads(blob)
            except Exception as exc:
                raise RaySystemError(
                    f"Could not load the function {spec.function_name} on this worker: {exc!r}. "
                    "Is its module importable here (same code and PYTHONPATH as the driver)?"
                ) from exc
            if len(self.functions) >= FUNCTION_CACHE:
                self.functions.pop(next(iter(self.functions)))
            self.functions[spec.function_digest] = fn
        return fn

    def _arguments(self, spec: ts.TaskSpec) -> tuple[list[Any], dict[str, Any]]:
        runtime = self.runtime
        values: list[Any] = []
        if spec.deps:
            records = runtime._fetch(spec.deps)
            for oid in spec.deps:
                kind, frames = records[oid]
                if kind == KIND_ERROR:
                    raise _DependencyFailed(frames)
                values.append(runtime.serializer.loads(frames))
        args, kwargs = runtime.serializer.loads(unpack(spec.args))
        if values:
            args = [values[a.index] if isinstance(a, ts.DepArg) else a for a in args]
            kwargs = {
                k: values[v.index] if isinstance(v, ts.DepArg) else v for k, v in kwargs.items()
            }
        return args, kwargs

    def _apply_env(self, spec: ts.TaskSpec, gpus: dict[str, int]) -> dict[str, str | None]:
        changes: dict[str, str] = {}
        if gpus or "GPU" in self.totals:
            changes["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        extra = spec.extra or {}
        env = (extra.get("runtime_env") or {}).get("env_vars") or {}
        changes.update({str(k): str(v) for k, v in env.items()})
        saved = {k: os.environ.get(k) for k in changes}
        os.environ.update(changes)
        return saved

    @staticmethod
    def _restore_env(saved: dict[str, str | None]) -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _Retry(NamedTuple):
    """An application error that retry_exceptions allows to retry; ``results``
    are published if the retry budget is spent."""

    results: list[Any]


class _StreamFailed(Exception):
    def __init__(self, count: int, error: RayTaskError) -> None:
        self.count = count
        self.error = error


class _DependencyFailed(Exception):
    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames


def _close(pubsub: Any) -> None:
    if pubsub is not None:
        try:
            pubsub.close()
        except Exception:  # noqa: BLE001 - it is being thrown away
            pass


def _count(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return f"a single {type(value).__name__}"


def _user_traceback() -> str:
    """The traceback without redray's own frames at its top."""
    etype, value, tb = sys.exc_info()
    frames = list(traceback.extract_tb(tb))
    frames = [f for f in frames if "workers/executor.py" not in f.filename.replace(os.sep, "/")]
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(etype, value))
    return text


def executor_main(
    settings: Settings,
    node_id: str,
    worker_id: str,
    totals: dict[str, int],
    slots: sl.Slots | None,
    slot: int,
) -> None:
    """Entry point of a forked executor process."""
    executor: Executor | None = None

    def on_term(signum: int, frame: Any) -> None:
        if executor is None or executor.idle:
            os._exit(0)
        executor.stopping = True

    def on_interrupt(signum: int, frame: Any) -> None:
        # cancel(): only the task the node named, and only inside its own code
        if executor is None or executor.current is None or executor.slots is None:
            return
        if not executor.cancel_requested_here():
            return
        executor.runtime.cancel_requested = True
        if executor.in_user_code:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_interrupt)
    try:
        from redray import api

        executor = Executor(settings, node_id, worker_id, totals, slots, slot)
        api.set_runtime(executor.runtime)
        executor.run()
    except redis.ConnectionError as exc:
        log.error("executor %s lost its Redis connection: %s", worker_id, exc)
    finally:
        if executor is not None:
            executor.runtime._closed = True
