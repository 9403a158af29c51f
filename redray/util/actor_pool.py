"""``ActorPool``: spread work over a fixed set of actors (Ray's API)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..exceptions import GetTimeoutError
from ..object_ref import ObjectRef


class ActorPool:
    """Run ``fn(actor, value)`` calls on whichever actor of the pool is idle.

    ``fn`` must call one actor method and return its ObjectRef, e.g.
    ``lambda a, v: a.double.remote(v)``.
    """

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._future_to_actor: dict[ObjectRef[Any], tuple[int, Any]] = {}
        self._index_to_future: dict[int, ObjectRef[Any]] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable[[Any, Any], Any], Any]] = []

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Results of ``fn`` over ``values``, in the order of ``values``.

        Every call is submitted now, as in Ray; the returned iterator only
        collects the results."""
        self._submit_all(fn, values)
        return self._drain(self.get_next)

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Results of ``fn`` over ``values``, as they finish (submitted now)."""
        self._submit_all(fn, values)
        return self._drain(self.get_next_unordered)

    def _submit_all(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> None:
        # results of earlier submissions that were never read would come first
        while self.has_next():
            try:
                self.get_next_unordered(timeout=0)
            except GetTimeoutError:
                break
        for v in values:
            self.submit(fn, v)

    def _drain(self, get: Callable[[], Any]) -> Iterator[Any]:
        while self.has_next():
            yield get()

    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Schedule ``fn(actor, value)`` on an idle actor, or when one frees up."""
        if self._idle_actors:
            actor = self._idle_actors.pop()
            future = fn(actor, value)
            if not isinstance(future, ObjectRef):
                raise TypeError(
                    "ActorPool functions must return the ObjectRef of one actor call, e.g. "
                    "lambda a, v: a.method.remote(v)."
                )
            self._future_to_actor[future] = (self._next_task_index, actor)
            self._index_to_future[self._next_task_index] = future
            self._next_task_index += 1
        else:
            self._pending_submits.append((fn, value))

    def has_next(self) -> bool:
        """Whether results are pending (submitted and not yet returned)."""
        return bool(self._future_to_actor) or bool(self._pending_submits)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order."""
        from .. import api

        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        if timeout is not None:
            ready, _ = api.wait([future], timeout=timeout)
            if not ready:
                if ignore_if_timedout:
                    return None
                raise GetTimeoutError("Timed out waiting for the next result")
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        _, actor = self._future_to_actor.pop(future)
        self._return_actor(actor)
        return api.get(future)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Whichever result finishes next."""
        from .. import api

        if not self.has_next():
            raise StopIteration("No more results to get")
        ready, _ = api.wait(list(self._future_to_actor), num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise GetTimeoutError("Timed out waiting for the next result")
        future = ready[0]
        index, actor = self._future_to_actor.pop(future)
        self._index_to_future.pop(index, None)
        self._next_return_index = max(self._next_return_index, index + 1)
        self._return_actor(actor)
        return api.get(future)

    def _return_actor(self, actor: Any) -> None:
        self._idle_actors.append(actor)
        if self._pending_submits:
            self.submit(*self._pending_submits.pop(0))

    def has_free(self) -> bool:
        """Whether an actor is idle and nothing waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None if there is none)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool."""
        busy = {a for _, a in self._future_to_actor.values()}
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to this ActorPool")
        self._return_actor(actor)
