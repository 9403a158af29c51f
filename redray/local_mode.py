"""Local mode (``init(local_mode=True)``): tasks and actors run in the
driver process, synchronously and in order, when ``.remote()`` is called.

As Ray's local mode did (measured on Ray 2.40, the last release that had it;
Ray 2.60 refuses ``local_mode=True``): the function and its arguments are
copied by serialization (a task does not change the caller's objects), a
task's ObjectRef arguments are replaced by their values, its exception is
raised by ``get`` (a ``RayTaskError`` that is also the user's class), it is
not retried, and ``nodes()`` shows one node with the driver's resources.

The private Redis server still runs (no node, no executor): results are
ordinary objects at the task's return ids, so ``get``, ``wait``, ``put`` and
ObjectRefs work unchanged. Actors are objects held here by actor id; their
records (names, ``get_actor``, ``kill``) are kept in Redis as usual.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import ids
from . import task_spec as ts
from .exceptions import ActorDiedError, RayTaskError
from .generator import DynamicObjectRefGenerator, end_id, owned_returns, result_of_call
from .identity import node_ip
from .object_ref import ObjectRef
from .serialization import KIND_ERROR, KIND_VALUE, unpack

if TYPE_CHECKING:
    from .runtime import Runtime


class _DependencyFailed(Exception):
    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames


class _Actor:
    """An actor of this process: its instance, or why it is dead."""

    def __init__(self, class_name: str) -> None:
        self.class_name = class_name
        self.instance: Any = None
        self.dead: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None


class LocalMode:
    """What local mode keeps for one ``init``: the actors and the function copies."""

    def __init__(self, node_id: str, totals: dict[str, float] | None) -> None:
        self.node_id = node_id
        #: the resources of the one node ``nodes()`` shows; None when joined
        #: to a cluster (its nodes are shown)
        self.totals = totals
        self.actors: dict[str, _Actor] = {}
        #: id(user function or class) -> (it, its serialized copy)
        self._copies: dict[int, tuple[Any, Any]] = {}

    def copy_of(self, target: Any) -> Any:
        """The function (or class) as a worker would load it: by value for
        ``__main__``'s, so a task sees a copy of its globals, as in Ray."""
        known = self._copies.get(id(target))
        if known is None or known[0] is not target:
            known = self._copies[id(target)] = (
                target,
                cloudpickle.loads(cloudpickle.dumps(target)),
            )
        return known[1]

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {
                "NodeID": self.node_id,
                "Alive": True,
                "NodeManagerAddress": node_ip(),
                "NodeManagerHostname": os.uname().nodename,
                "NodeName": node_ip(),
                "Resources": dict(self.totals or {}),
                "GPUIds": [],
                "Pid": os.getpid(),
                "LastHeartbeat": None,
            }
        ]

    def close(self) -> None:
        for actor in self.actors.values():
            if actor.loop is not None:
                actor.loop.close()
        self.actors.clear()
        self._copies.clear()


_state: list[LocalMode | None] = [None]


def active() -> LocalMode | None:
    """This process's local mode, if ``init(local_mode=True)`` set it up."""
    return _state[0]


def start(node_id: str, totals: dict[str, float] | None) -> LocalMode:
    mode = _state[0] = LocalMode(node_id, totals)
    return mode


def stop() -> None:
    mode, _state[0] = _state[0], None
    if mode is not None:
        mode.close()


# -- running a call ------------------------------------------------------------------------
def _arguments(
    runtime: Runtime, packed: bytes, deps: tuple[str, ...]
) -> tuple[list[Any], dict[str, Any]]:
    """The arguments as a worker gets them (``encode_args``' output, so
    copies), top-level ObjectRefs replaced by their values."""
    records = runtime.fetch(deps) if deps else {}
    for oid in deps:
        if records[oid][0] == KIND_ERROR:
            raise _DependencyFailed(records[oid][1])
    values = [runtime.serializer.loads(records[oid][1]) for oid in deps]
    new_args, new_kwargs = runtime.serializer.loads(unpack(packed))

    def value(a: Any) -> Any:
        return values[a.index] if isinstance(a, ts.DepArg) else a

    return [value(a) for a in new_args], {k: value(v) for k, v in new_kwargs.items()}


def _publish(runtime: Runtime, oid: str, kind: bytes, payload: Any, name: str = "") -> None:
    """Store a result at its object id (a value, or an error's frames)."""
    if kind == KIND_VALUE:
        try:
            frames = runtime.serializer.dumps(payload)
        except Exception as exc:  # noqa: BLE001 - the result becomes the error
            error = TypeError(f"Could not serialize a return value of {name}: {exc!r}")
            kind, frames = KIND_ERROR, runtime.error_frames(_error(name, error))
    else:
        frames = payload
    runtime.objects.put(frames, oid=oid, kind=kind)


def _error(name: str, exc: BaseException) -> RayTaskError:
    return RayTaskError(name, traceback.format_exc(), exc, pid=os.getpid(), ip=node_ip())


def _run(
    runtime: Runtime,
    name: str,
    call: Callable[[list[Any], dict[str, Any]], Any],
    packed: tuple[bytes, tuple[str, ...]],
    num_returns: Any,
) -> Any:
    """Run one call now and store its results; what ``.remote()`` returns."""
    tid = ids.task_id()
    returns = owned_returns(tid, num_returns)
    try:
        call_args, call_kwargs = _arguments(runtime, *packed)
        result = call(call_args, call_kwargs)
        if num_returns in ("streaming", "dynamic"):
            _publish_items(runtime, tid, name, num_returns, result)
        else:
            _publish_values(runtime, tid, name, num_returns, result)
    except _DependencyFailed as failed:
        _fail(runtime, tid, num_returns, failed.frames)
    except Exception as exc:  # noqa: BLE001 - raised by get, as in Ray
        _fail(runtime, tid, num_returns, runtime.error_frames(_error(name, exc)))
    return result_of_call_local(runtime, tid, num_returns, returns)


def result_of_call_local(runtime: Runtime, tid: str, num_returns: Any, returns: list[str]) -> Any:
    result = result_of_call(runtime, tid, num_returns, returns)
    # no completion notice comes for a call run here
    runtime.refs.streams.discard(tid)
    return result


def _fail(runtime: Runtime, tid: str, num_returns: Any, frames: list[Any]) -> None:
    if num_returns == "streaming":
        _publish(runtime, ids.return_id(tid, 1), KIND_ERROR, frames)
        _publish(runtime, end_id(tid), KIND_VALUE, 1)
        return
    for oid in owned_returns(tid, num_returns):
        _publish(runtime, oid, KIND_ERROR, frames)


def _publish_values(runtime: Runtime, tid: str, name: str, num_returns: int, result: Any) -> None:
    n = int(num_returns)
    if n == 0:
        return
    values = [result]
    if n > 1:
        if inspect.isgenerator(result):
            values = list(itertools.islice(result, n))  # as Ray: the first n values
        else:
            try:
                values = list(result)
            except TypeError:
                values = []
        if len(values) != n:
            raise ValueError(f"Task {name} returned {len(values)} values, but num_returns={n}.")
    for i, value in enumerate(values):
        _publish(runtime, ids.return_id(tid, i + 1), KIND_VALUE, value, name)


def _publish_items(runtime: Runtime, tid: str, name: str, mode: str, gen: Any) -> None:
    """A generator's values, one object each; an error it raises is the
    item after them (as in normal mode)."""
    if not inspect.isgenerator(gen):
        raise TypeError(
            f"{name} has num_returns={mode!r} but did not return a generator "
            f"(it returned {type(gen).__name__})."
        )
    first = 2 if mode == "dynamic" else 1
    count = 0
    try:
        for value in gen:
            _publish(runtime, ids.return_id(tid, first + count), KIND_VALUE, value, name)
            count += 1
    except Exception as exc:  # noqa: BLE001 - delivered in order, after the values
        err = runtime.error_frames(_error(name, exc))
        _publish(runtime, ids.return_id(tid, first + count), KIND_ERROR, err)
        count += 1
    if mode == "streaming":
        _publish(runtime, end_id(tid), KIND_VALUE, count)
        return
    refs: list[ObjectRef[Any]] = [ObjectRef(ids.return_id(tid, i + 2), None) for i in range(count)]
    _publish(runtime, ids.return_id(tid, 1), KIND_VALUE, DynamicObjectRefGenerator(refs))


def _num_returns(opts: dict[str, Any], is_generator: bool) -> Any:
    n = opts.get("num_returns")
    if n is None:
        return "streaming" if is_generator else 1
    return n


def run_task(
    runtime: Runtime,
    mode: LocalMode,
    function: Callable[..., Any],
    name: str,
    packed: tuple[bytes, tuple[str, ...]],
    opts: dict[str, Any],
) -> Any:
    """A remote function's ``.remote()`` in local mode: runs it now, once
    (Ray's local mode does not retry)."""
    fn = mode.copy_of(function)
    num_returns = _num_returns(opts, inspect.isgeneratorfunction(function))
    return _run(runtime, name, lambda a, k: fn(*a, **k), packed, num_returns)


def create_actor(
    runtime: Runtime,
    mode: LocalMode,
    actor_id: str,
    cls: type,
    name: str,
    packed: tuple[bytes, tuple[str, ...]],
) -> None:
    """Construct the actor now; an error in ``__init__`` kills it (its calls
    raise ActorDiedError, as in normal mode)."""
    actor = mode.actors[actor_id] = _Actor(name)
    try:
        call_args, call_kwargs = _arguments(runtime, *packed)
        actor.instance = mode.copy_of(cls)(*call_args, **call_kwargs)
    except _DependencyFailed as failed:
        actor.dead = ActorDiedError(
            f"The actor {name} ({actor_id}) died: an argument of its creation task failed: "
            f"{runtime.serializer.loads(failed.frames)!r}",
            actor_id=actor_id,
        )
    except Exception as exc:  # noqa: BLE001 - the actor dies of it
        actor.dead = ActorDiedError(
            f"The actor {name} ({actor_id}) died because of an error raised in its creation "
            f"task: {exc!r}",
            cause=_error(f"{name}.__init__", exc),
            actor_id=actor_id,
        )


def kill_actor(mode: LocalMode, actor_id: str) -> None:
    actor = mode.actors.get(actor_id)
    if actor is not None and actor.dead is None:
        actor.dead = ActorDiedError(
            f"The actor {actor.class_name} ({actor_id}) was killed with redray.kill().",
            actor_id=actor_id,
        )
        actor.instance = None


def call_method(
    runtime: Runtime,
    mode: LocalMode,
    actor_id: str,
    method: str,
    qualname: str,
    packed: tuple[bytes, tuple[str, ...]],
    num_returns: Any,
) -> Any:
    """An actor method's ``.remote()`` in local mode: runs it now."""
    actor = mode.actors.get(actor_id)
    if actor is None:
        actor = _Actor(qualname.rsplit(".", 1)[0])
        actor.dead = ActorDiedError(
            f"The actor {actor_id} is not an actor of this local-mode driver.", actor_id=actor_id
        )
    dead = actor.dead
    if dead is not None:
        tid = ids.task_id()
        returns = owned_returns(tid, num_returns)
        _fail(runtime, tid, num_returns, runtime.error_frames(dead))
        return result_of_call_local(runtime, tid, num_returns, returns)

    def call(a: list[Any], k: dict[str, Any]) -> Any:
        if method == "__ray_ready__":
            return True
        if method == "__ray_terminate__":
            kill_actor(mode, actor_id)
            return None
        if method == "__ray_call__":
            return a[0](actor.instance, *a[1:], **k)
        result = getattr(actor.instance, method)(*a, **k)
        if inspect.iscoroutine(result):
            if actor.loop is None:
                actor.loop = asyncio.new_event_loop()
            return actor.loop.run_until_complete(result)
        return result

    return _run(runtime, qualname, call, packed, num_returns)
