"""``ObjectRef``: a future for a value that lives in Redis."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from .reference_table import ReferenceTable

R = TypeVar("R")


class _Owner(Protocol):
    """What an ObjectRef needs of its process's runtime."""

    refs: ReferenceTable

    def get_values(self, oids: Sequence[str], timeout: float | None) -> list[Any]: ...


def _no_runtime() -> _Owner | None:
    return None


#: finds this process's runtime (installed by redray.session, which sits above
#: this module: an ObjectRef unpickled in a process belongs to its runtime)
find_runtime: list[Callable[[], _Owner | None]] = [_no_runtime]


class TaskID(str):
    """A task's id (a string; ``.hex()`` as Ray's TaskID has)."""

    def hex(self) -> str:
        return str(self)


class ObjectRef(Generic[R]):
    """A reference to an object (a task's result or a ``put`` value).

    Pass it to ``get`` for the value, to ``wait`` to learn when it is ready, or
    to other tasks as an argument. The process that created it owns the value:
    when its last ``ObjectRef`` is gone and no task still needs it, the value is
    deleted from Redis.
    """

    __slots__ = ("_id", "_runtime", "__weakref__")

    def __init__(self, object_id: str, runtime: _Owner | None = None) -> None:
        self._id = object_id
        self._runtime = runtime
        if runtime is not None:
            runtime.refs.add_local(object_id)

    def hex(self) -> str:
        return self._id

    def binary(self) -> bytes:
        return bytes.fromhex(self._id)

    def task_id(self) -> TaskID:
        return TaskID(self._id[:20])

    def __repr__(self) -> str:
        return f"ObjectRef({self._id})"

    def __hash__(self) -> int:
        return hash(self._id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __del__(self) -> None:
        runtime = self._runtime
        if runtime is not None:
            runtime.refs.release(self._id)

    def __reduce__(self) -> Any:
        # A ref that leaves this process inside a value (a nested argument, a
        # result, a put) is pinned until its job ends: the receiver borrows it.
        if self._runtime is not None:
            self._runtime.refs.escape(self._id)
        return (_rebuild, (self._id,))

    def future(self) -> concurrent.futures.Future[R]:
        """A ``concurrent.futures.Future`` that resolves to the value."""
        fut: concurrent.futures.Future[R] = concurrent.futures.Future()

        def run() -> None:
            try:
                runtime = self._runtime or find_runtime[0]()
                if runtime is None:
                    raise RuntimeError("redray is not initialized: call redray.init() first.")
                fut.set_result(runtime.get_values([self._id], None)[0])
            except BaseException as exc:  # noqa: BLE001 - delivered to the future
                fut.set_exception(exc)

        threading.Thread(target=run, daemon=True, name=f"redray-future-{self._id}").start()
        return fut

    def as_future(self) -> asyncio.Future[R]:
        """An ``asyncio`` future of the value, on the running event loop (Ray's
        ``as_future``)."""
        return asyncio.wrap_future(self.future())

    def _on_completed(self, callback: Callable[[Any], None]) -> None:
        """Ray's ``_on_completed``: call ``callback`` with the value once the
        object is ready (at once if it is), or with the exception ``get``
        would raise; from a thread of redray's, so it must not block long."""

        def done(fut: concurrent.futures.Future[R]) -> None:
            exc = fut.exception()
            callback(exc if exc is not None else fut.result())

        self.future().add_done_callback(done)

    def __await__(self) -> Any:
        return asyncio.wrap_future(self.future()).__await__()


def _rebuild(object_id: str) -> ObjectRef[Any]:
    runtime = find_runtime[0]()
    return ObjectRef(object_id, runtime)
