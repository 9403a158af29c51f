"""What running user code needs, shared by the task executor and the actor
runner: loading functions, materializing arguments, the environment of a
task, turning values and errors into frames, and the tracebacks users see.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NamedTuple, Protocol

import cloudpickle

import redray
from redray import dead_letters, job_config
from redray import task_spec as ts
from redray.exceptions import RaySystemError, RayTaskError
from redray.identity import node_ip
from redray.runtime import Runtime
from redray.serialization import KIND_ERROR, KIND_VALUE, unpack
from redray.settings import Settings
from redray.signing import FUNCTION, SignatureError

from . import output, runtime_env_cache
from . import slots as sl

#: Functions kept unpickled per process.
FUNCTION_CACHE = 1024


class Host(Protocol):
    """What the actor runner needs of the executor process it took over."""

    settings: Settings
    node_id: str
    worker_id: str
    runtime: Runtime
    functions: FunctionCache
    stopping: bool
    slots: sl.Slots | None
    slot: int
    totals: dict[str, int]

    def set_state(
        self, state: int, task_id: str = "", actor_id: str = "", memory: int = 0
    ) -> None: ...

    def wait_for_redis(self) -> None: ...


class DependencyFailed(Exception):
    """An argument's object holds an error: the task fails with it, unrun."""

    def __init__(self, frames: list[Any]) -> None:
        self.frames = frames


class StreamFailed(Exception):
    """A streaming generator raised after ``count`` items."""

    def __init__(self, count: int, error: RayTaskError) -> None:
        self.count = count
        self.error = error


class FunctionCache:
    """Functions (and actor classes) by content hash, unpickled once per process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._cache: dict[str, Any] = {}

    def load(self, spec: ts.TaskSpec) -> Any:
        fn = self._cache.get(spec.function_digest)
        if fn is not None:
            return fn
        blob: Any = self.runtime.client.get(spec.function_key)
        if blob is None:
            raise RaySystemError(
                f"The code of {spec.function_name} is gone from Redis (its job ended?)."
            )
        try:
            code = self.runtime.signer.open(FUNCTION, spec.function_key, blob)
        except SignatureError as exc:
            dead_letters.record(
                self.runtime.client,
                self.runtime.keys,
                spec.function_key,
                f"signature check: {exc}",
                blob,
                task=spec.task_id,
            )
            raise RaySystemError(
                f"The code of {spec.function_name} in Redis failed its signature check, so "
                f"this worker did not load it: {exc}."
            ) from None
        try:
            fn = cloudpickle.loads(code)
        except Exception as exc:
            raise RaySystemError(
                f"Could not load the function {spec.function_name} on this worker: {exc!r}. "
                "Is its module importable here (same code and PYTHONPATH as the driver)?"
            ) from exc
        if len(self._cache) >= FUNCTION_CACHE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[spec.function_digest] = fn
        return fn


def arguments(runtime: Runtime, spec: ts.TaskSpec) -> tuple[list[Any], dict[str, Any]]:
    """The task's arguments, its ObjectRef inputs replaced by their values;
    DependencyFailed when an input holds an error."""
    values: list[Any] = []
    if spec.deps:
        records = runtime.fetch(spec.deps)
        for oid in spec.deps:
            kind, frames = records[oid]
            if kind == KIND_ERROR:
                raise DependencyFailed(frames)
            values.append(runtime.serializer.loads(frames))
    args, kwargs = runtime.serializer.loads(unpack(spec.args))
    if values:
        args = [values[a.index] if isinstance(a, ts.DepArg) else a for a in args]
        kwargs = {k: values[v.index] if isinstance(v, ts.DepArg) else v for k, v in kwargs.items()}
    return args, kwargs


def apply_env(
    spec: ts.TaskSpec, gpus: dict[str, int], totals: dict[str, int]
) -> dict[str, str | None]:
    """Set the task's GPUs and ``runtime_env`` (``env_vars``, ``working_dir``,
    ``py_modules``: workers/runtime_env_cache.py); what to restore."""
    changes: dict[str, str] = {}
    if gpus or "GPU" in totals:
        changes["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    extra = spec.extra or {}
    # its working_dir and py_modules first: a package that cannot be had
    # raises RuntimeEnvSetupError before anything is changed
    runtime_env_cache.enter(spec.job_id, extra.get("runtime_env"))
    env = (extra.get("runtime_env") or {}).get("env_vars") or {}
    changes.update({str(k): str(v) for k, v in env.items()})
    saved = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    job_config.inherit_from(extra)
    output.task_started(spec.job_id, display_name(spec), spec.task_id, extra.get("actor") or "")
    return saved


def display_name(spec: ts.TaskSpec) -> str:
    """What the driver shows a task's output under, as Ray: its ``name``
    option, else the function's or the actor class's own name."""
    return str((spec.extra or {}).get("name") or spec.function_name.rsplit(".", 1)[-1])


def restore_env(saved: dict[str, str | None]) -> None:
    # the task's output reaches Redis before its result is published
    output.flush()
    job_config.set_job_defaults(None, None)
    runtime_env_cache.leave()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def value_frames(
    runtime: Runtime, spec: ts.TaskSpec, index: int, value: Any
) -> tuple[bytes, list[Any]]:
    """A return value's frames, or the error saying it cannot be serialized."""
    try:
        return KIND_VALUE, runtime.serializer.dumps(value)
    except Exception as exc:  # noqa: BLE001
        msg = (
            f"Could not serialize return value #{index} ({type(value).__name__}) of "
            f"{spec.function_name}: {exc!r}"
        )
        return KIND_ERROR, runtime.error_frames(failure(spec, msg, TypeError))


def task_error(
    spec: ts.TaskSpec, exc: BaseException, traceback_str: str | None = None
) -> RayTaskError:
    """The error a task's own exception becomes, with the user's traceback
    (the one being handled, unless given) and where it ran."""
    text = user_traceback() if traceback_str is None else traceback_str
    return RayTaskError(spec.function_name, text, exc, pid=os.getpid(), ip=node_ip())


def failure(spec: ts.TaskSpec, message: str, kind: type[Exception] = ValueError) -> RayTaskError:
    """A task's error that redray found, not the task (a wrong number of
    results, a value that cannot be serialized): ``kind(message)``."""
    return task_error(spec, kind(message), message)


#: redray's own code: its frames are left out of the tracebacks users see
_OURS = tuple(
    os.path.dirname(os.path.abspath(path)) + os.sep
    for path in (redray.__file__, __file__)
    if path is not None
)


def user_traceback() -> str:
    """The traceback of the exception being handled, without redray's own
    frames (the executor's above the user's code, the API's below a failed
    ``get`` in it), as Ray shows it."""
    etype, value, tb = sys.exc_info()
    frames = [f for f in traceback.extract_tb(tb) if not _is_ours(f.filename)]
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    text += "".join(traceback.format_exception_only(etype, value))
    return text


def _is_ours(filename: str) -> bool:
    return os.path.abspath(filename).startswith(_OURS)


class GeneratorReturns(NamedTuple):
    """What a generator task with ``num_returns=n`` (n > 1) returned: the
    values it yielded, at most n, and the error for the rest when it raised
    or ended early (None if all n came)."""

    values: list[Any]
    error: RayTaskError | None
    #: the exception the generator raised (retry_exceptions looks at it)
    raised: BaseException | None


def generator_returns(spec: ts.TaskSpec, gen: Any, n: int) -> GeneratorReturns:
    """Run a generator task with ``num_returns=n`` as Ray does: its first n
    values are the results (more are not asked for); a generator that raises
    after k values keeps them, and the other n - k results hold the error."""
    values: list[Any] = []
    try:
        for value in gen:
            values.append(value)
            if len(values) == n:
                break
    except Exception as exc:  # noqa: BLE001 - goes to the results not yet yielded
        return GeneratorReturns(values, task_error(spec, exc), exc)
    if len(values) == n:
        return GeneratorReturns(values, None, None)
    msg = f"Task returned {len(values)} objects, but num_returns={n}."
    return GeneratorReturns(values, failure(spec, msg), None)
