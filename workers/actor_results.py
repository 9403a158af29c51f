"""The records an actor's method call publishes: its values (or the error
in each of its results), and a streaming call's items as they come."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from redray import ids
from redray import task_spec as ts
from redray.runtime import Runtime
from redray.scripts import ReturnValue
from redray.serialization import KIND_ERROR, KIND_VALUE

from .execution import generator_returns, task_error, value_frames


class Results:
    """Builds and publishes the records of this actor's calls."""

    def __init__(self, runtime: Runtime, consumer: str) -> None:
        self.rt = runtime
        #: the attempt tag of staged values: the worker's id
        self.consumer = consumer
        #: call -> the frames of the error its results hold (its task event's error)
        self.failures: dict[str, list[Any]] = {}

    def take_failure(self, task_id: str) -> list[Any] | None:
        return self.failures.pop(task_id, None)

    def of(self, spec: ts.TaskSpec, result: Any) -> list[ReturnValue]:
        """The call's results (a streaming call's end record, once its items
        are out); a generator method with ``num_returns=n`` keeps the values
        it yielded before it raised or ended early, and the rest hold the
        error (as in Ray)."""
        if spec.num_returns == "streaming":
            return self.stream(spec, result)
        n = spec.num_returns
        if not (isinstance(n, int) and n > 1 and inspect.isgenerator(result)):
            return self.encode(spec, self._split(spec, result))
        got = generator_returns(spec, result, n)
        frames = [self._value_frames(spec, i + 1, v) for i, v in enumerate(got.values)]
        if got.error is not None:
            frames += [(KIND_ERROR, self.rt.error_frames(got.error))] * (n - len(frames))
        return self._returns(spec, frames)

    def failed(self, spec: ts.TaskSpec, exc: BaseException) -> list[ReturnValue]:
        """Every result holds the exception the call raised (being handled)."""
        return self.error(spec, task_error(spec, exc))

    def error(self, spec: ts.TaskSpec, err: BaseException) -> list[ReturnValue]:
        """Every result holds ``err``."""
        return self.errors(spec, self.rt.error_frames(err))

    def errors(self, spec: ts.TaskSpec, frames: list[Any]) -> list[ReturnValue]:
        """Every result holds the error in ``frames``."""
        return self._returns(spec, [(KIND_ERROR, frames)] * len(ts.result_indexes(spec)))

    def encode(self, spec: ts.TaskSpec, values: list[Any]) -> list[ReturnValue]:
        return self._returns(
            spec, [self._value_frames(spec, i + 1, value) for i, value in enumerate(values)]
        )

    # -- streaming ---------------------------------------------------------------------
    def stream(self, spec: ts.TaskSpec, gen: Any) -> list[ReturnValue]:
        """A generator method: publish each value as it comes, then the end record."""
        count = 0
        try:
            for value in gen:
                count += 1
                self._publish_item(spec, count, *self._value_frames(spec, count, value))
        except Exception as exc:  # noqa: BLE001 - delivered after the values before it
            count += 1
            self._publish_item(spec, count, *self._error_item(spec, exc))
        return self._end(spec, count)

    async def stream_async(self, spec: ts.TaskSpec, gen: Any, io: Any) -> list[ReturnValue]:
        """An async generator method: as ``stream``, publishing on ``io``'s threads."""
        loop = asyncio.get_running_loop()
        count = 0
        try:
            async for value in gen:
                count += 1
                frames = self._value_frames(spec, count, value)
                await loop.run_in_executor(io, self._publish_item, spec, count, *frames)
        except Exception as exc:  # noqa: BLE001 - delivered after the values before it
            count += 1
            frames = self._error_item(spec, exc)
            await loop.run_in_executor(io, self._publish_item, spec, count, *frames)
        return self._end(spec, count)

    def _error_item(self, spec: ts.TaskSpec, exc: BaseException) -> tuple[bytes, list[Any]]:
        return KIND_ERROR, self.rt.error_frames(task_error(spec, exc))

    def _end(self, spec: ts.TaskSpec, count: int) -> list[ReturnValue]:
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

    # -- encoding ----------------------------------------------------------------------
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

    def _returns(
        self, spec: ts.TaskSpec, results: list[tuple[bytes, list[Any]]]
    ) -> list[ReturnValue]:
        for kind, frames in results:
            if kind == KIND_ERROR:
                self.failures.setdefault(spec.task_id, frames)
        return [
            self.rt.return_value(ids.return_id(spec.task_id, i), kind, frames, self.consumer)
            for i, (kind, frames) in zip(ts.result_indexes(spec), results)
        ]
