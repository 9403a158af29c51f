"""Generator tasks: ``ObjectRefGenerator`` (streaming) and dynamic returns.

A generator task publishes each yielded value as an object as soon as it is
produced: item ``i`` (1-based) is object ``task id + hex(i)``. When the
generator finishes, its end record (index 0) holds how many items there are;
an exception raised by the generator becomes one more item, after the values
before it, so the consumer meets it in order.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from . import ids
from .exceptions import GetTimeoutError
from .object_ref import ObjectRef

if TYPE_CHECKING:
    from .runtime import Runtime

END_INDEX = 0


def end_id(task_id: str) -> str:
    return ids.return_id(task_id, END_INDEX)


class ObjectRefGenerator:
    """The ObjectRefs a streaming generator task yields, in order.

    ``next(gen)`` blocks until the next value is ready and returns its
    ObjectRef (``get`` it for the value); iteration stops when the task's
    generator is exhausted. ``async for`` works too.
    """

    def __init__(self, task_id: str, runtime: Runtime) -> None:
        self._task_id = task_id
        self._runtime = runtime
        self._next = 1
        self._count: int | None = None
        self._end: ObjectRef[Any] = ObjectRef(end_id(task_id), runtime)

    def __repr__(self) -> str:
        return f"ObjectRefGenerator({self._task_id})"

    def __iter__(self) -> ObjectRefGenerator:
        return self

    def __next__(self) -> ObjectRef[Any]:
        ref = self._next_ref(timeout=None)
        assert ref is not None
        return ref

    def __aiter__(self) -> ObjectRefGenerator:
        return self

    async def __anext__(self) -> ObjectRef[Any]:
        # StopIteration cannot cross a Future: the thread returns None instead
        ref = await asyncio.to_thread(self._next_or_none)
        if ref is None:
            raise StopAsyncIteration
        return ref

    def _next_or_none(self) -> ObjectRef[Any] | None:
        try:
            return self.__next__()
        except StopIteration:
            return None

    def next_ready(self) -> bool:
        """Whether ``next()`` would return (or stop) without blocking."""
        return self._next_ref(timeout=0, peek=True) is not None or self._done()

    def _done(self) -> bool:
        return self._count is not None and self._next > self._count

    def _item(self, index: int) -> str:
        return ids.return_id(self._task_id, index)

    def _next_ref(self, timeout: float | None, peek: bool = False) -> ObjectRef[Any] | None:
        rt = self._runtime
        if self._done():
            if peek:
                return None
            raise StopIteration
        item = self._item(self._next)
        end = self._end._id
        rt.refs.own([item])
        ready = rt.wait_ready([item, end], 1, timeout)
        if item not in ready and end in ready and self._count is None:
            self._count = int(rt.get_values([end], None)[0])
            # the end record may come first; the item may still be on its way
            ready = rt.wait_ready([item], 1, 0)
        if item in ready:
            if not peek:
                self._next += 1
            return ObjectRef(item, rt)
        if self._done():
            if peek:
                return None
            raise StopIteration
        if timeout is not None and not peek:
            raise GetTimeoutError(f"The next item of {self!r} was not ready in {timeout} s.")
        return None

    def completed(self) -> ObjectRef[Any]:
        """An ObjectRef that is ready when the generator task has finished."""
        return self._end

    def task_id(self) -> str:
        return self._task_id


GENERATOR_MODES = ("streaming", "dynamic")


def check_num_returns(value: Any, where: str) -> Any:
    """A count >= 0, "streaming" / "dynamic" (generators), or None (the
    default: "streaming" for a generator, else 1); ValueError otherwise."""
    if value is None or value in GENERATOR_MODES:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"num_returns for {where} must be an integer >= 0, 'streaming', 'dynamic' or "
            f"None, got {value!r}."
        )
    return value


def owned_returns(task_id: str, num_returns: Any) -> list[str]:
    """Object ids the submitter owns from the start."""
    if num_returns == "streaming":
        return [end_id(task_id)]
    if num_returns == "dynamic":
        return [ids.return_id(task_id, 1)]
    return [ids.return_id(task_id, i + 1) for i in range(num_returns)]


def result_of_call(runtime: Runtime, task_id: str, num_returns: Any, returns: list[str]) -> Any:
    """What ``.remote()`` gives back: None, a ref, a list, or a generator."""
    if num_returns == "streaming":
        runtime.refs.streams.add(task_id)
        return ObjectRefGenerator(task_id, runtime)
    refs: list[ObjectRef[Any]] = [ObjectRef(oid, runtime) for oid in returns]
    if num_returns == 0:
        return None
    if num_returns in (1, "dynamic"):
        return refs[0]
    return refs


class DynamicObjectRefGenerator:
    """``num_returns="dynamic"``: the ObjectRefs of every value, once the task ended."""

    def __init__(self, refs: list[ObjectRef[Any]]) -> None:
        self._refs = refs

    def __iter__(self) -> Any:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)
