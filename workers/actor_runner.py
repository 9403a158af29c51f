"""An executor turned actor: runs ``__init__`` once, then serves the mailbox.

The mailbox (``actor_mailbox``) is a Redis stream read with XREADGROUP; a
call's results are published and its entry acknowledged in one step, and a
synchronous actor sends that step together with its next blocking read
(``actor_serving`` has the ways of serving calls, ``actor_calls`` how one
call runs). Entries a previous incarnation had read but not finished are
claimed back after a restart and retried up to ``max_task_retries`` times
(``actor_retries``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from redray import ids
from redray import task_spec as ts
from redray.actor_lifecycle import actor_info, finalize, not_its_process
from redray.connections import TRANSIENT
from redray.context import ActorContext, TaskContext
from redray.exceptions import ActorDiedError, ActorOutOfMemoryError, RayTaskError
from redray.identity import node_ip
from redray.recovery import error_returns
from redray.resources import from_units, memory_limit, parse_reservation
from redray.scripts import Claimed

from . import slots as sl
from .actor_calls import Actor
from .actor_cancels import Cancels
from .actor_mailbox import Done, Mailbox, MailboxGone, Terminate
from .actor_serving import serve
from .execution import Host, apply_env, arguments, user_traceback

log = logging.getLogger("redray.actor")


class ActorRunner:
    def __init__(self, executor: Host, claimed: Claimed, spec: ts.TaskSpec) -> None:
        self.ex = executor
        self.rt = executor.runtime
        self.claimed = claimed
        self.spec = spec
        extra = spec.extra or {}
        self.actor_id: str = extra["actor"]
        self.extra = extra
        self.mailbox = Mailbox(executor, self.actor_id)
        self.cancels = Cancels(self.rt, self.actor_id)
        #: how the previous incarnation ended (from the record), and whether for memory
        self.last_exit: tuple[str, bool] = ("", False)

    # -- life ------------------------------------------------------------------------
    def run(self) -> None:
        ex, rt, spec = self.ex, self.rt, self.spec
        units, gpus = parse_reservation(self.claimed.reservation)
        # memory= is held (and enforced) for the actor's whole life
        ex.set_state(sl.ACTOR, spec.task_id, self.actor_id, memory_limit(units))
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
            # for the actor's whole life; a runtime_env that cannot be set up kills it
            apply_env(spec, gpus, ex.totals)
            cls = ex.functions.load(spec)
            args, kwargs = arguments(rt, spec)
            instance = cls(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the actor dies with this cause
            cause = RayTaskError(
                f"{spec.function_name}.__init__",
                user_traceback(),
                exc,
                pid=os.getpid(),
                ip=node_ip(),
            )
            self._finalize(
                ActorDiedError(
                    f"The actor {spec.function_name} ({self.actor_id}) died because its __init__ "
                    f"raised {type(exc).__name__}: {exc}\n{cause.traceback_str}",
                    cause=cause,
                    actor_id=self.actor_id,
                )
            )
            return
        if not self._ready(units, gpus):
            return
        rt.current_task = None
        actor = Actor(ex, spec, instance, self.mailbox, self.cancels)
        try:
            self._serve(actor)
        except MailboxGone as gone:
            info = actor_info(self.rt.cluster, self.actor_id)
            if info and not_its_process(info, ex.node_id, ex.worker_id):
                return  # a copy the actor moved away from: the live one is not ours to end
            self._finalize(
                ActorDiedError(
                    f"The actor {spec.function_name} ({self.actor_id}) ended: {gone}.",
                    actor_id=self.actor_id,
                )
            )
        except Terminate:
            self._finalize(
                ActorDiedError(
                    f"The actor {spec.function_name} ({self.actor_id}) exited: "
                    f"{actor.exit_reason}.",
                    actor_id=self.actor_id,
                )
            )

    def _ready(self, units: dict[str, int], gpus: Any) -> bool:
        """Record where the actor lives and give back what it does not keep
        while it lives; False if the actor was killed meanwhile."""
        ex, rt = self.ex, self.rt
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
        ready = bool(
            rt.scripts.actor_ready(
                actor_id=self.actor_id,
                node_id=ex.node_id,
                task_id=self.spec.task_id,
                release_cpu=release,
                keep=keep,
                fields={"node": ex.node_id, "worker": ex.worker_id, "pid": os.getpid()},
            )
        )
        if ready and release and ex.slots is not None and not ex.slots.any_idle():
            # the CPU given back may start the next actor, but only in a new
            # executor: the agent sleeps until poked (100 actors on 2 CPUs
            # took 30 s, one agent wake-up a second, without this)
            ex.slots.poke()
        return ready

    def _serve(self, actor: Actor) -> None:
        """Serve the mailbox until the executor stops, across Redis outages."""
        self.cancels.listen()
        self.recover(actor)
        while True:
            try:
                serve(actor)
                return
            except TRANSIENT as exc:
                log.warning("actor %s: Redis unreachable (%s); reconnecting", self.actor_id, exc)
                self.mailbox.reread = True
                self.ex.wait_for_redis()
                self.cancels.listen()

    def _finalize(self, err: ActorDiedError) -> None:
        ex = self.ex
        finalize(
            self.rt.cluster,
            self.actor_id,
            err,
            node_id=ex.node_id,
            task_id=self.spec.task_id,
            worker_id=ex.worker_id,
        )

    # -- recovery ----------------------------------------------------------------------
    def recover(self, actor: Actor) -> None:
        """Finish what an earlier incarnation read but did not acknowledge."""
        claimed = self.mailbox.claim_pending()
        if not claimed:
            return
        last: Any = self.rt.client.hmget(self.rt.keys.actor(self.actor_id), ["exit", "exit_oom"])
        self.last_exit = (last[0] or b"").decode(errors="replace"), bool(last[1])
        for entry_id, fields, delivered in claimed:
            # delivered n times = run n times, each ended by a crash: n - 1 retries used
            retries_used = delivered - 1
            spec = self.mailbox.decode(entry_id, fields)
            if spec is None:
                self.mailbox.publish([Done(entry_id, None, [])])
                continue
            budget = actor.retry_policy(spec).retries
            if budget != -1 and retries_used >= budget:
                self._fail_entry(entry_id, spec, budget)
            else:
                self.mailbox.publish(actor.execute_all([(entry_id, fields)]))

    def _fail_entry(self, entry_id: bytes, spec: ts.TaskSpec, budget: int) -> None:
        how, oom = self.last_exit
        death = ActorOutOfMemoryError if oom else ActorDiedError
        err = death(
            f"The actor {self.spec.function_name} ({self.actor_id}) died while running "
            f"{spec.function_name}{f' ({how})' if how else ''}, and "
            f"max_task_retries={budget} allows no more attempts."
        )
        oids = [ids.return_id(spec.task_id, i) for i in ts.result_indexes(spec)]
        self.mailbox.publish([Done(entry_id, spec, error_returns(self.rt.cluster, oids, err))])
