"""The executor: a pre-started process that claims ready tasks and runs them.

An executor talks to Redis directly: one ``claim.lua`` call takes a task and
reserves its node's slots, recording the claim under the executor's name;
when the task is done one pipeline publishes the results (``complete.lua``)
and claims the next task, so a busy executor pays a single round trip per
task. An idle executor blocks in BLPOP on the bells of the shapes its node
can serve, on its node's wake list and on its own (a new shape): each ready
task rings one bell once, so one executor wakes per task, not all of them.
Functions are cached by content hash.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import redis

from redray import dead_letters, ids, rejections, session, task_events
from redray import task_spec as ts
from redray.connections import TRANSIENT, blocking_call
from redray.context import TaskContext
from redray.exceptions import RaySystemError
from redray.resources import from_units, memory_limit, parse_reservation, parse_shape
from redray.runtime import Runtime
from redray.scripts import NO_OWNER, Claimed, ReturnValue
from redray.serialization import KIND_ERROR
from redray.settings import Settings
from redray.signing import SignatureError

from . import execution as ex
from . import output
from . import slots as sl
from .task_call import Retry, TaskCall

log = logging.getLogger("redray.executor")

#: An idle executor claims once per idle slice even without a token (a lost
#: token costs latency, never a task), and re-reads the shapes.
IDLE_WAIT = 5.0
#: Pause after an unexpected error, so a persistent one does not spin.
BACKOFF = 1.0
#: Reference-table size above which an executor forgets dead references.
PRUNE_AT = 10_000
#: A busy executor re-reads the shapes this often (in its publish round trip).
SHAPES_EVERY = 2.0
#: Return values published per complete.lua call; more go in several calls.
PUBLISH_CHUNK = 1000
#: Seconds an executor that found nothing fitting a bell token's task stops
#: listening to the bells (its node's wake list still wakes it).
PARK = 0.5


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
        self.runtime.submitter.nested = True
        assert self.runtime.inbox is not None
        self.runtime.inbox.on_block = self._on_block
        self.runtime.inbox.on_unblock = self._on_unblock
        self.keys = self.runtime.keys
        self.scripts = self.runtime.scripts
        self.client = self.runtime.client
        self.single = self.runtime.cluster.single
        self.lane = self.runtime.cluster.single_lane
        self.functions = ex.FunctionCache(self.runtime)
        self.call = TaskCall(self)
        self.shapes: list[str] = []
        self._shapes_at = 0.0
        self.current: Claimed | None = None
        #: the node's free CPU units after the current claim (-1: not known)
        self.free_cpu = -1
        #: the running task's start (task_events.now_ms) and the error it ended with
        self.started_ms = 0
        self.task_error: Any = None
        self.current_cpu = 0
        #: bytes the running task declared with memory= (0: no limit)
        self.current_memory = 0
        self.stopping = False
        self.idle = True
        #: nothing fitted the last bell token: until then, listen to the
        #: node's wake list only (a token nothing here can use must not spin)
        self.parked_until = 0.0
        #: KeyboardInterrupt (cancel) may only be raised while this is set
        self.in_user_code = False
        #: (task, actor, memory limit) last written to this executor's slot
        self._slot_fields: tuple[str, str, int] | None = None

    # -- state ---------------------------------------------------------------------
    def set_state(self, state: int, task_id: str = "", actor_id: str = "", memory: int = 0) -> None:
        slots = self.slots
        if slots is not None:
            # written only when changed: twice per task otherwise
            if self._slot_fields != (task_id, actor_id, memory):
                self._slot_fields = (task_id, actor_id, memory)
                slots.set_task(self.slot, task_id)
                slots.set_actor(self.slot, actor_id)
                # the agent kills this process if it grows past what was declared
                slots.set_memory_limit(self.slot, memory)
            slots.set_state(self.slot, state)
            # the agent sleeps until it may need another executor: when a
            # task blocks, or when none is idle and the node has CPU left
            # (waking it for every task on a full node cost every task)
            if state == sl.BLOCKED or (
                state == sl.RUNNING and self.free_cpu != 0 and not slots.any_idle()
            ):
                slots.poke()

    def _on_block(self) -> None:
        if self.current is None:
            return
        if self.current_cpu:
            # recorded in the reservation record: a death while blocked
            # releases only what the task still holds
            self.scripts.block(self.node_id, self.current.task_id)
        self.set_state(sl.BLOCKED, self.current.task_id, memory=self.current_memory)

    def _on_unblock(self) -> None:
        if self.current is None:
            return
        if self.current_cpu:
            self.scripts.unblock(self.node_id, self.current.task_id)
        self.set_state(sl.RUNNING, self.current.task_id, memory=self.current_memory)

    def refresh_shapes(self, raw: Any = None) -> None:
        if raw is None:
            raw = self.client.hkeys(self.keys.shapes)
        shapes = []
        for s in raw:
            shape = s.decode(errors="replace") if isinstance(s, bytes) else str(s)
            try:
                need = parse_shape(shape)
            except ValueError:
                continue  # not a shape redray wrote: no task can be queued under it
            if all(self.totals.get(k, 0) >= v for k, v in need.items()):
                shapes.append(shape)
        self.shapes = sorted(shapes)
        self._shapes_at = time.monotonic()

    # -- main loop -------------------------------------------------------------------
    def run(self) -> None:
        """Claim and run tasks until stopped; ride out Redis outages."""
        try:
            while not self.stopping:
                try:
                    self.refresh_shapes()
                    # a claim whose reply was lost in an outage is still ours:
                    # claim.lua gives it again
                    self.serve(self._claim())
                    return
                except TRANSIENT as exc:
                    log.warning(
                        "executor %s: Redis unreachable (%s); reconnecting", self.worker_id, exc
                    )
                    self.wait_for_redis()
        finally:
            self.idle = True

    def wait_for_redis(self) -> None:
        delay = 0.1
        while not self.stopping:
            try:
                self.client.ping()
                return
            except TRANSIENT:
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def serve(self, claimed: Claimed | None) -> None:
        while not self.stopping:
            if claimed is None:
                try:
                    claimed = self._wait_for_work()
                except TRANSIENT:
                    raise
                except Exception:  # noqa: BLE001 - e.g. a foreign value at a redray key
                    log.exception("executor %s: claim failed", self.worker_id)
                    time.sleep(BACKOFF)
                continue
            self.idle = False
            task = claimed
            try:
                claimed = self.run_one(task)
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001 - bad data must not kill the executor
                log.exception("executor %s: unexpected error; carrying on", self.worker_id)
                if self.stopping:
                    return  # an actor's process: its node restarts or ends the actor
                claimed = self._abandon(task, exc)

    def _wait_for_work(self) -> Claimed | None:
        """Block until a bell token or a node wake-up arrives (or an idle
        slice passes), then claim once."""
        self.idle = True
        self.set_state(sl.IDLE)
        wakes = [self.keys.executor_wake(self.worker_id), self.keys.node_wake(self.node_id)]
        parked = time.monotonic() < self.parked_until
        listen_bells = not parked and self._taking_work()
        keys = [*wakes, *([self.keys.bell(s) for s in self.shapes] if listen_bells else [])]
        block = max(self.parked_until - time.monotonic(), 0.01) if parked else IDLE_WAIT
        reply = blocking_call(self.lane, block, "BLPOP", *keys, block)
        held = 0
        if reply is None:
            if parked:
                return None
            # the idle slice passed: re-read the shapes, and claim only if
            # something is queued (a token may have been lost)
            pipe = self.scripts.batch()
            pipe.command("HKEYS", self.keys.shapes)
            pipe.command("ZCARD", self.keys.ready)
            shapes, queued = pipe.execute()
            self.refresh_shapes(shapes)
            if not queued:
                return None
        else:
            key = bytes(reply[0]).decode()
            if key in wakes:
                self.parked_until = 0.0
                if reply[1] == b"s":
                    self.refresh_shapes()  # a new shape (shape_wake.lua)
            else:
                bells = [self.keys.bell(s) for s in self.shapes]
                held = bells.index(key) + 1 if key in bells else 0
        if not self._taking_work():
            return None
        claimed = self.scripts.parse_claim(
            self.scripts.claim(self.node_id, self.worker_id, self.shapes, held=held)
        )
        if claimed is None and held:
            # nothing fits this node now (the token went back for other
            # nodes): for a moment, wait for this node to free something
            self.parked_until = time.monotonic() + PARK
        return claimed

    def _taking_work(self) -> bool:
        # the node stops taking work while its machine is short of memory
        return bool(self.shapes) and not (self.slots is not None and self.slots.paused())

    def _claim(self) -> Claimed | None:
        if not self._taking_work():
            return None
        return self.scripts.parse_claim(
            self.scripts.claim(self.node_id, self.worker_id, self.shapes)
        )

    # -- one task ------------------------------------------------------------------------
    def run_one(self, claimed: Claimed) -> Claimed | None:
        """Run a claimed task, publish its results, and claim the next one."""
        self.current = claimed
        self.free_cpu = claimed.free_cpu
        units, gpus = parse_reservation(claimed.reservation)
        self.current_cpu = units.get("CPU", 0)
        self.current_memory = memory_limit(units)
        self.set_state(sl.RUNNING, claimed.task_id, memory=self.current_memory)
        self.started_ms = task_events.now_ms()
        # a cancel() that arrived between the claim and now
        self.runtime.cancel_requested = self.cancel_requested_here()
        try:
            spec = ts.open_spec(self.runtime.signer, claimed.spec, task_id=claimed.task_id)
        except SignatureError as exc:
            why = (
                f"its spec failed its signature check on worker {self.worker_id} "
                f"(node {self.node_id}): {exc}"
            )
            self._refuse(claimed, why)
            return self._finish(claimed, None, [])
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
            name=str((spec.extra or {}).get("name") or ""),
        )
        outcome = self.call.run(spec, gpus)
        if isinstance(outcome, Retry):
            # re-queued while the budget lasts; after it, the last error stands
            shape = claimed.reservation.partition(";")[0]
            if (
                self.scripts.requeue(
                    self.node_id, spec.task_id, self.worker_id, spec.max_retries, shape
                )
                != 0
            ):
                self.current = None
                return self._claim_next()
            outcome = outcome.results
        self.task_error = task_events.error_of(runtime.objects.serializer, outcome)
        returns = [
            runtime.return_value(ids.return_id(spec.task_id, i), k, frames, self.worker_id)
            for i, k, frames in outcome
        ]
        return self._finish(claimed, spec, returns)

    def _publish_args(self, claimed: Claimed, spec: ts.TaskSpec | None) -> dict[str, Any]:
        return {
            "task_id": claimed.task_id,
            "job_id": spec.job_id if spec else "",
            "owner": spec.owner if spec else NO_OWNER,
            "node_id": self.node_id,
            "worker_id": self.worker_id,
            "bells": self.shapes,
            "run": True,
        }

    def _finish(
        self, claimed: Claimed, spec: ts.TaskSpec | None, returns: list[ReturnValue]
    ) -> Claimed | None:
        runtime = self.runtime
        try:
            runtime.settle()
        except Exception:  # noqa: BLE001 - the results still go out
            log.exception("could not flush nested submissions of %s", claimed.task_id)
        args = self._publish_args(claimed, spec)
        # many return values: all but the last part published first, the task kept
        while len(returns) > PUBLISH_CHUNK:
            part, returns = returns[:PUBLISH_CHUNK], returns[PUBLISH_CHUNK:]
            self._ring(self._publish_until_done(args, part, final=False)[1])
        # publish and claim the next task in one script call (claim_lib.lua)
        taking = not self.stopping and self._taking_work()
        pipe = self.scripts.batch()
        self.scripts.complete(**args, returns=returns, claim_next=taking, pipe=pipe)
        if spec is not None and task_events.enabled(spec.extra):
            task_events.add(pipe, self.keys, [self._event(claimed, spec)])
        refresh = time.monotonic() - self._shapes_at >= SHAPES_EVERY
        if refresh:
            pipe.command("HKEYS", self.keys.shapes)
        try:
            replies = pipe.execute()
            _stored, next_claim, missed = self.scripts.parse_complete(replies[0])
            if refresh:
                self.refresh_shapes(replies[-1])
        except TRANSIENT:
            # publishing is idempotent (first write wins, the reservation is
            # released once) and so is its claim (asked again, it returns
            # what the first run took): send it again until Redis is back
            next_claim, missed = self._publish_until_done(
                args, returns, final=True, claim_next=taking
            )
        self._ring(missed)
        self.current = None
        self.current_cpu = self.current_memory = 0
        runtime.current_task = None
        if runtime.refs.size() > PRUNE_AT:
            runtime.refs.prune()
        if next_claim is None:
            self.set_state(sl.IDLE)
        return next_claim

    def _event(self, claimed: Claimed, spec: ts.TaskSpec) -> dict[str, str]:
        """The task-event record of the task ending now (task_events.py)."""
        error, self.task_error = self.task_error, None
        return task_events.of_spec(
            spec,
            task_type="NORMAL_TASK",
            where=(self.node_id, self.worker_id),
            start_ms=self.started_ms,
            shape=claimed.reservation,
            error=error,
        )

    def _ring(self, shapes: list[str]) -> None:
        """Dependants became ready under shapes this executor did not pass the
        bells of (it had not learned them): ring those bells, learn them."""
        if not shapes:
            return
        with self.client.pipeline(transaction=False) as pipe:
            for shape in shapes:
                pipe.rpush(self.keys.bell(shape), "1")
            pipe.execute()
        self.refresh_shapes()

    def _publish_until_done(
        self,
        args: dict[str, Any],
        returns: list[ReturnValue],
        *,
        final: bool,
        claim_next: bool = False,
    ) -> tuple[Claimed | None, list[str]]:
        while True:
            try:
                reply = self.scripts.complete(
                    **args, returns=returns, final=final, claim_next=claim_next, retry=True
                )
                _stored, claimed, missed = self.scripts.parse_complete(reply)
                return claimed, missed
            except TRANSIENT:
                if self.stopping and self.runtime.current_actor is None:
                    raise
                self.wait_for_redis()

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
        for attempt in ("fail", "release"):
            try:
                if attempt == "fail":
                    spec = ts.open_spec(self.runtime.signer, claimed.spec, task_id=claimed.task_id)
                    self.task_error = exc
                    return self._finish(claimed, spec, self._system_error(spec, exc))
                return self._finish(claimed, None, [])
            except TRANSIENT:
                raise
            except Exception:  # noqa: BLE001 - then at least give the slots back
                log.exception(
                    "executor %s: could not %s task %s", self.worker_id, attempt, claimed.task_id
                )
        self.current = None
        time.sleep(BACKOFF)
        return self._claim_next()

    def _refuse(self, claimed: Claimed, why: str) -> None:
        """Run nothing of a task whose spec failed its signature check: keep
        it as a dead letter, say so in the log, tell its owner."""
        dead_letters.record(
            self.client,
            self.keys,
            self.keys.task_spec,
            why,
            claimed.spec,
            task=claimed.task_id,
        )
        rejections.report(self.single, self.keys, claimed.spec, claimed.task_id, why)

    def _system_error(self, spec: ts.TaskSpec, exc: BaseException) -> list[ReturnValue]:
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

    def _claim_next(self) -> Claimed | None:
        self.current_cpu = self.current_memory = 0
        self.set_state(sl.IDLE)
        self.runtime.current_task = None
        return None if self.stopping else self._claim()

    def cancel_requested_here(self) -> bool:
        """Whether the node was asked to cancel the task this executor runs."""
        slots, current = self.slots, self.current
        return (
            slots is not None
            and current is not None
            and slots.cancel_request(self.slot) == current.task_id
        )


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
        executor = Executor(settings, node_id, worker_id, totals, slots, slot)
        session.set_runtime(executor.runtime)
        output.install(executor.runtime.client, executor.runtime.keys, node_id)
        executor.run()
    except redis.ConnectionError as exc:
        log.error("executor %s lost its Redis connection: %s", worker_id, exc)
    finally:
        if output.current is not None:
            output.current.stop()
        if executor is not None:
            executor.runtime._closed = True
