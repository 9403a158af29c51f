"""Ray's concurrency groups in an actor's process: each group runs its calls
on its own threads (a threaded actor) or its own event loop in its own thread
(an async actor), limited to the group's max concurrency, so a busy group
never holds up another's calls.

Every actor that runs calls concurrently has at least the default group,
sized by ``max_concurrency`` (Ray's defaults: 1000 for an async actor, 1
otherwise); methods join a group with ``@method(concurrency_group=...)``, a
call with ``.options(concurrency_group=...)``.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from redray import task_spec as ts

#: the name of the group calls without one run in
DEFAULT = ""
ASYNC_DEFAULT_CONCURRENCY = 1000


def method_options(cls: type, name: str) -> dict[str, Any]:
    """The ``@method(...)`` options of the class's method ``name``."""
    fn = inspect.getattr_static(cls, name, None)
    fn = getattr(fn, "__func__", fn)  # staticmethod / classmethod
    opts = getattr(fn, "__redray_method_options__", None)
    return opts if isinstance(opts, dict) else {}


def group_sizes(extra: Mapping[str, Any]) -> dict[str, int]:
    """Each group's max concurrency, the default group's under DEFAULT."""
    default = ASYNC_DEFAULT_CONCURRENCY if extra.get("is_async") else 1
    sizes = {DEFAULT: int(extra.get("max_concurrency") or default)}
    groups = extra.get("concurrency_groups") or {}
    if isinstance(groups, dict):
        sizes.update({str(g): int(n) for g, n in groups.items() if str(g) and int(n) >= 1})
    return sizes


def group_of(cls: type, spec: ts.TaskSpec, sizes: Mapping[str, int]) -> str:
    """The group a call runs in: its ``.options()``, else its method's
    ``@method(concurrency_group=)``, else the default (also for a name the
    actor does not have: handles check names before sending)."""
    extra = spec.extra or {}
    group = extra.get("concurrency_group")
    if group is None:
        group = method_options(cls, str(extra.get("method", ""))).get("concurrency_group")
    return group if isinstance(group, str) and group in sizes else DEFAULT


class ThreadGroups:
    """A thread pool per group."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._pools = {
            g: ThreadPoolExecutor(n, thread_name_prefix=f"redray-actor-{g or 'default'}")
            for g, n in sizes.items()
        }

    def submit(self, group: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._pools[group].submit(fn, *args)

    def shutdown(self) -> None:
        """Wait for the calls already given to the groups."""
        for pool in self._pools.values():
            pool.shutdown(wait=True)


class _LoopThread:
    """One group of an async actor: an event loop in a thread of its own,
    and a semaphore that limits how many of its calls run at once."""

    def __init__(self, group: str, size: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.gate: asyncio.Semaphore | None = None
        self._size = size
        ready = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(ready,), name=f"redray-loop-{group or 'default'}", daemon=True
        )
        self.thread.start()
        ready.wait()

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.gate = asyncio.Semaphore(self._size)  # bound to this loop
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    async def _gated(self, coro: Coroutine[Any, Any, Any]) -> Any:
        assert self.gate is not None
        async with self.gate:
            return await coro

    def submit(self, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(self._gated(coro), self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class LoopGroups:
    """An event loop thread per group (async actors)."""

    def __init__(self, sizes: Mapping[str, int]) -> None:
        self._loops = {g: _LoopThread(g, n) for g, n in sizes.items()}
        self._futures: set[Future[Any]] = set()

    def submit(self, group: str, coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        future = self._loops[group].submit(coro)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return future

    def shutdown(self) -> None:
        """Wait for the calls already given to the groups, then stop the loops."""
        for future in list(self._futures):
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - each call publishes its own outcome
                pass
        for loop in self._loops.values():
            loop.stop()
