"""The actor this process hosts, and how one of its calls runs: look up the
method on the actor's class, wait for the call's arguments, call it (again,
as its retry policy allows), and turn what it returned or raised into the
records its mailbox entry is published with.

A call runs the same way in every serving mode; an async actor's calls are
awaited on an event loop (``execute_async``), the others' run in the thread
that took them (``execute_spec``).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from redray import task_events
from redray import task_spec as ts
from redray.actor import ActorExit
from redray.context import TaskContext
from redray.exceptions import ActorDiedError, AsyncioActorExit, TaskCancelledError
from redray.scripts import ReturnValue

from .actor_cancels import Cancels
from .actor_mailbox import Done, Entry, Mailbox
from .actor_results import Results
from .actor_retries import Retries, RetryPolicy, retry_policy
from .execution import DependencyFailed, Host, arguments

TERMINATE = "__ray_terminate__"


def class_method(instance: Any, name: str, statics: dict[str, Any] | None = None) -> Any:
    """The method ``name`` of the actor's class, bound to ``instance``: an
    instance attribute of that name does not hide it (as in Ray, which calls
    the methods the class defines). ``statics`` caches the class lookups (an
    actor's: inspect.getattr_static cost some 6 µs of every call)."""
    if name == "__ray_ready__":
        return lambda: True
    if name == "__ray_call__":
        return lambda fn, *args, **kwargs: fn(instance, *args, **kwargs)
    cls = type(instance)
    if statics is None or name not in statics:
        static = inspect.getattr_static(cls, name, None)
        if statics is not None:
            statics[name] = static
    else:
        static = statics[name]
    if static is None:
        return getattr(instance, name)  # e.g. supplied by __getattr__
    if isinstance(static, (staticmethod, classmethod)):
        return getattr(cls, name)
    attr = getattr(cls, name)
    return attr.__get__(instance, cls) if hasattr(attr, "__get__") else attr


class Actor:
    """The actor's instance in this process, its mailbox and cancels, and
    whether it is ending."""

    def __init__(
        self,
        executor: Host,
        spec: ts.TaskSpec,
        instance: Any,
        mailbox: Mailbox,
        cancels: Cancels,
    ) -> None:
        self.ex = executor
        self.rt = executor.runtime
        #: the creation task's spec
        self.spec = spec
        self.extra = spec.extra or {}
        self.actor_id: str = self.extra["actor"]
        self.max_task_retries = int(self.extra.get("max_task_retries") or 0)
        self.instance = instance
        #: method name -> its class attribute (class_method)
        self._statics: dict[str, Any] = {}
        self.mailbox = mailbox
        self.cancels = cancels
        self.results = Results(self.rt, executor.worker_id)
        #: __ray_terminate__ was reached: later entries stay in the mailbox,
        #: where finalize() fails them with ActorDiedError
        self.terminating = False
        #: why the actor ends when a call asks it to (finalize's message)
        self.exit_reason = "__ray_terminate__ was called"

    def retry_policy(self, spec: ts.TaskSpec) -> RetryPolicy:
        return retry_policy(type(self.instance), spec, self.max_task_retries)

    # -- in this thread ----------------------------------------------------------------
    def execute_all(self, entries: list[Entry]) -> list[Done]:
        """Run calls in order, none after ``__ray_terminate__``."""
        done = []
        for entry_id, fields in entries:
            if self.terminating:
                break
            done.append(self.execute(entry_id, fields))
        return done

    def execute(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Done:
        """Run one call."""
        spec = self.mailbox.decode(entry_id, fields)
        if spec is None:
            return Done(entry_id, None, [])
        return self.execute_spec(entry_id, spec)

    def execute_spec(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        """Run one call in this thread."""
        started = task_events.now_ms()
        return self._timed(self._execute_spec(entry_id, spec), started)

    def _timed(self, done: Done, started: int) -> Done:
        """``done`` with what its task event needs: when the call started, its error."""
        failure = self.results.take_failure(done.spec.task_id) if done.spec else None
        return done._replace(started_ms=started, error_frames=failure)

    def _execute_spec(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        unrun = self._unrun(entry_id, spec, poll=True)
        if unrun is not None:
            return unrun
        try:
            return Done(entry_id, spec, self._call(spec))
        except ActorExit:
            return self._exit(entry_id, spec)

    def _task_context(self, spec: ts.TaskSpec) -> TaskContext:
        """What ``get_runtime_context()`` tells the call: its own task id and
        name, the actor's node, worker and what the actor holds."""
        held = self.rt.current_actor
        return TaskContext(
            task_id=spec.task_id,
            job_id=spec.job_id,
            node_id=self.ex.node_id,
            worker_id=self.ex.worker_id,
            resources=dict(held.resources) if held else {},
            gpu_ids=list(held.gpu_ids) if held else [],
            function_name=spec.function_name,
            name=str((spec.extra or {}).get("name") or ""),
        )

    def _call(self, spec: ts.TaskSpec) -> list[ReturnValue]:
        rt = self.rt
        rt.current_task = self._task_context(spec)
        try:
            try:
                method = self._method(spec)
                args, kwargs = self._arguments(spec)
            except DependencyFailed as exc:
                return self.results.errors(spec, exc.frames)
            return self.results.of(spec, self._run_method(spec, method, args, kwargs))
        except Exception as exc:  # noqa: BLE001 - the call fails, the actor lives on
            return self.results.failed(spec, exc)
        finally:
            rt.current_task = None

    def _run_method(
        self, spec: ts.TaskSpec, method: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Call the method, again while its retry policy allows the exception
        it raised (Ray's ``retry_exceptions`` for actor methods); a coroutine
        method of a sync actor runs in an event loop of its own."""
        retries = self._retries(spec)
        while True:
            with retries:
                result = method(*args, **kwargs)
                return asyncio.run(result) if inspect.iscoroutine(result) else result

    # -- on an event loop --------------------------------------------------------------
    async def execute_async(self, entry_id: bytes, spec: ts.TaskSpec, io: Any) -> Done | None:
        """Run one call of an async actor, blocking Redis work on ``io``'s
        threads; None if it is left in the mailbox (the actor is ending)."""
        started = task_events.now_ms()
        done = await self._execute_async(entry_id, spec, io)
        return None if done is None else self._timed(done, started)

    async def _execute_async(self, entry_id: bytes, spec: ts.TaskSpec, io: Any) -> Done | None:
        if self.terminating:
            return None
        unrun = self._unrun(entry_id, spec, poll=False)
        if unrun is not None:
            return unrun
        # this asyncio task's own copy (a ContextVar): calls awaited at once do not mix
        self.rt.current_task = self._task_context(spec)
        try:
            return await self._execute_awaited(entry_id, spec, io)
        finally:
            self.rt.current_task = None

    async def _execute_awaited(self, entry_id: bytes, spec: ts.TaskSpec, io: Any) -> Done:
        try:
            method = self._method(spec)
            args, kwargs = await asyncio.get_running_loop().run_in_executor(
                io, self._arguments, spec
            )
        except DependencyFailed as exc:
            return Done(entry_id, spec, self.results.errors(spec, exc.frames))
        except Exception as exc:  # noqa: BLE001
            return Done(entry_id, spec, self.results.failed(spec, exc))
        with self.cancels.cancellable(spec.task_id):
            try:
                result = await self._run_method_async(spec, method, args, kwargs)
                if spec.num_returns == "streaming" and inspect.isasyncgen(result):
                    return Done(entry_id, spec, await self.results.stream_async(spec, result, io))
                return Done(entry_id, spec, self.results.of(spec, result))
            except asyncio.CancelledError:
                return Done(entry_id, spec, self._cancelled(spec))
            except (AsyncioActorExit, ActorExit):
                return self._exit(entry_id, spec)
            except Exception as exc:  # noqa: BLE001
                return Done(entry_id, spec, self.results.failed(spec, exc))

    async def _run_method_async(
        self, spec: ts.TaskSpec, method: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        retries = self._retries(spec)
        while True:
            with retries:
                result = method(*args, **kwargs)
                return (await result) if inspect.isawaitable(result) else result

    # -- the steps both share ----------------------------------------------------------
    def _unrun(self, entry_id: bytes, spec: ts.TaskSpec, poll: bool) -> Done | None:
        """The call's Done if it does not run: it is ``__ray_terminate__``, or
        cancel() reached it (``poll``: read the actor's channel first, where
        no thread listens to it)."""
        if _method_name(spec) == TERMINATE:
            self.terminating = True
            values = [None] * len(ts.result_indexes(spec))
            return Done(entry_id, spec, self.results.encode(spec, values), True)
        if poll:
            self.cancels.poll()
        if spec.task_id in self.cancels.cancelled:
            return Done(entry_id, spec, self._cancelled(spec))
        return None

    def _method(self, spec: ts.TaskSpec) -> Any:
        return class_method(self.instance, _method_name(spec), self._statics)

    def _arguments(self, spec: ts.TaskSpec) -> tuple[list[Any], dict[str, Any]]:
        """The call's arguments, once the objects it depends on are ready
        (DependencyFailed if one holds an error)."""
        if spec.deps:
            self.rt.wait_ready(spec.deps, len(spec.deps), None)
        return arguments(self.rt, spec)

    def _retries(self, spec: ts.TaskSpec) -> Retries:
        return Retries(type(self.instance), spec, self.max_task_retries)

    def _cancelled(self, spec: ts.TaskSpec) -> list[ReturnValue]:
        self.cancels.cancelled.discard(spec.task_id)
        return self.results.error(spec, TaskCancelledError(spec.task_id))

    def _exit(self, entry_id: bytes, spec: ts.TaskSpec) -> Done:
        """The method called ``exit_actor()``: the actor ends after this call,
        which, like those queued behind it, raises ActorDiedError (as in Ray)."""
        self.terminating = True
        self.exit_reason = f"{spec.function_name} called exit_actor()"
        err = ActorDiedError(
            f"The actor {self.spec.function_name} ({self.actor_id}) exited: {self.exit_reason}.",
            actor_id=self.actor_id,
        )
        return Done(entry_id, spec, self.results.error(spec, err), True)


def _method_name(spec: ts.TaskSpec) -> Any:
    return (spec.extra or {}).get("method", "")
