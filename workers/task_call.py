"""One task's call in an executor: set up its runtime_env, load its function
and arguments, call it, and turn what it returned, yielded or raised into the
results its executor publishes (or a Retry that ``retry_exceptions`` allows).

Generators: ``num_returns="streaming"`` and ``"dynamic"`` publish each value
as it is produced (``publish_item``), ``num_returns=n`` takes the first n.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, NamedTuple, Protocol

from redray import ids
from redray import task_spec as ts
from redray.exceptions import RayTaskError, RuntimeEnvSetupError, TaskCancelledError
from redray.generator import DynamicObjectRefGenerator
from redray.object_ref import ObjectRef
from redray.serialization import KIND_ERROR, KIND_VALUE

from . import execution as ex

log = logging.getLogger("redray.executor")


class Caller(ex.Host, Protocol):
    """What a task's call needs of its executor."""

    #: KeyboardInterrupt (cancel) may only be raised while this is set
    in_user_code: bool


class TaskCall:
    """Runs the tasks an executor claims, one at a time."""

    def __init__(self, host: Caller) -> None:
        self.host = host
        self.rt = host.runtime

    def run(self, spec: ts.TaskSpec, gpus: dict[str, int]) -> Any:
        """Run the task; returns [(index, kind, frames)] to publish, or a Retry.

        Index 1.. are the return values; a streaming generator publishes its
        items as it goes and returns only its end record (index 0).
        """
        runtime = self.rt
        indexes = ts.result_indexes(spec)

        def fail(kind_frames: list[Any]) -> list[Any]:
            return [(i, KIND_ERROR, kind_frames) for i in indexes]

        try:
            # first: the function may come from the task's working_dir or py_modules
            saved_env = ex.apply_env(spec, gpus, self.host.totals)
        except RuntimeEnvSetupError as exc:
            return fail(runtime.error_frames(exc))
        try:
            fn = self.host.functions.load(spec)
            args, kwargs = ex.arguments(runtime, spec)
        except ex.DependencyFailed as failed:
            ex.restore_env(saved_env)
            return fail(failed.frames)
        except Exception as exc:  # noqa: BLE001 - reported on the caller's ObjectRef
            ex.restore_env(saved_env)
            return fail(runtime.error_frames(ex.task_error(spec, exc)))
        runtime.children = []
        streamed = 0
        try:
            if runtime.cancel_requested:
                raise KeyboardInterrupt  # cancelled between claim and start
            self.host.in_user_code = True
            try:
                result = fn(*args, **kwargs)
                if spec.num_returns in ("streaming", "dynamic"):
                    result = self._drain(spec, result)
                    streamed = len(result)
                elif inspect.isgenerator(result) and isinstance(spec.num_returns, int):
                    if spec.num_returns > 1:
                        result = ex.generator_returns(spec, result, spec.num_returns)
            finally:
                self.host.in_user_code = False
        except KeyboardInterrupt:
            self._cancel_children()
            return fail(runtime.error_frames(TaskCancelledError(spec.task_id)))
        except ex.StreamFailed as stream_error:
            # the values before the error were published; the error is the next item
            if spec.num_returns == "dynamic":
                return self._dynamic_end(spec, stream_error.count, stream_error.error)
            return self._stream_end(spec, stream_error.count, stream_error.error)
        except Exception as exc:  # noqa: BLE001 - becomes the task's error
            if runtime.cancel_requested:
                self._cancel_children()
                return fail(runtime.error_frames(TaskCancelledError(spec.task_id)))
            err = ex.task_error(spec, exc)
            if self._should_retry(spec, exc):
                return Retry(fail(runtime.error_frames(err)))
            return fail(runtime.error_frames(err))
        finally:
            ex.restore_env(saved_env)
        if spec.num_returns == "streaming":
            return self._stream_end(spec, streamed, None)
        if spec.num_returns == "dynamic":
            return self._dynamic_end(spec, streamed, None)
        n = int(spec.num_returns)
        if n == 0:
            return []
        if isinstance(result, ex.GeneratorReturns):
            return self._generator_results(spec, indexes, result)
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
                return fail(runtime.error_frames(ex.failure(spec, msg)))
        return self._values(spec, indexes, values)

    def _generator_results(
        self, spec: ts.TaskSpec, indexes: list[int], got: ex.GeneratorReturns
    ) -> Any:
        """The values a ``num_returns=n`` generator yielded, then its error in
        the results it did not reach (or a retry, if retry_exceptions allows)."""
        if got.error is None:
            return self._values(spec, indexes, got.values)
        error = self.rt.error_frames(got.error)
        if got.raised is not None and self._should_retry(spec, got.raised):
            return Retry([(i, KIND_ERROR, error) for i in indexes])
        k = len(got.values)
        return self._values(spec, indexes[:k], got.values) + [
            (i, KIND_ERROR, error) for i in indexes[k:]
        ]

    def _values(self, spec: ts.TaskSpec, indexes: list[int], values: list[Any]) -> list[Any]:
        return [(i, *ex.value_frames(self.rt, spec, i, value)) for i, value in zip(indexes, values)]

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
                if spec.num_returns == "dynamic" and self._should_retry(spec, exc):
                    raise
                raise ex.StreamFailed(len(published), ex.task_error(spec, exc)) from None
            index = first + len(published)
            self.publish_item(spec, index, *ex.value_frames(self.rt, spec, index, value))
            published.append(index)

    def publish_item(self, spec: ts.TaskSpec, index: int, kind: bytes, frames: list[Any]) -> None:
        oid = ids.return_id(spec.task_id, index)
        ret = self.rt.return_value(oid, kind, frames, self.host.worker_id)
        self.rt.settle()
        self.rt.scripts.complete(
            task_id=spec.task_id,
            job_id=spec.job_id,
            owner=spec.owner,
            node_id=self.host.node_id,
            returns=[ret],
            final=False,
            run=True,
            retry=True,
        )

    def _dynamic_end(self, spec: ts.TaskSpec, count: int, error: RayTaskError | None) -> list[Any]:
        """``num_returns="dynamic"``: the task's one result is the generator of
        its values' refs (values at indexes 2..); an error the generator
        raised is the last of them, as in Ray."""
        if error is not None:
            self.publish_item(spec, count + 2, KIND_ERROR, self.rt.error_frames(error))
            count += 1
        refs: list[ObjectRef[Any]] = [
            ObjectRef(ids.return_id(spec.task_id, i + 2), None) for i in range(count)
        ]
        return self._values(spec, [1], [DynamicObjectRefGenerator(refs)])

    def _stream_end(self, spec: ts.TaskSpec, count: int, error: RayTaskError | None) -> list[Any]:
        if error is not None:
            count += 1
            self.publish_item(spec, count, KIND_ERROR, self.rt.error_frames(error))
        return [(0, KIND_VALUE, self.rt.serializer.dumps(count))]

    def _cancel_children(self) -> None:
        """cancel(recursive=True): the tasks this task submitted go too."""
        if self.host.slots is not None and not self.host.slots.cancel_recursive(self.host.slot):
            return
        for child in self.rt.children:
            try:
                self.rt.cancel(ids.return_id(child, 1), force=False)
            except Exception:  # noqa: BLE001 - best effort
                log.debug("could not cancel child task %s", child)

    def _should_retry(self, spec: ts.TaskSpec, exc: BaseException) -> bool:
        retry = spec.retry_exceptions
        if not retry or spec.max_retries == 0:
            return False
        if retry is True:
            return True
        return isinstance(exc, tuple(retry))


class Retry(NamedTuple):
    """An application error that retry_exceptions allows to retry; ``results``
    are published if the retry budget is spent."""

    results: list[Any]


def _count(value: Any) -> str:
    try:
        return str(len(value))
    except TypeError:
        return f"a single {type(value).__name__}"
