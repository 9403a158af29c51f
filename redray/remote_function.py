"""``@remote`` functions: option checking at decoration time, task submission."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from . import ids, ignored_options, job_config, local_mode, runtime_env, session
from . import task_spec as ts
from .constants import INLINE_LIMIT
from .generator import check_num_returns, owned_returns, result_of_call
from .object_ref import ObjectRef
from .resources import request, shape_of
from .serialization import frames_size, pack

R = TypeVar("R")

#: Options a task accepts, as in Ray. Those without an effect here are accepted
#: so Ray programs run unchanged.
TASK_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "resources",
        "memory",
        "num_returns",
        "max_retries",
        "retry_exceptions",
        "name",
        "runtime_env",
        "scheduling_strategy",
        "max_calls",
        "accelerator_type",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "label_selector",
        "fallback_strategy",
        "enable_task_events",
        "_metadata",
        "_generator_backpressure_num_objects",
    }
)

DEFAULT_MAX_RETRIES = 3


def validate_task_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Check options; ValueError naming the bad one."""
    unknown = sorted(set(options) - TASK_OPTIONS)
    if unknown:
        raise ValueError(
            f"Invalid option {unknown[0]!r} for {where}. Valid options are: "
            f"{', '.join(sorted(o for o in TASK_OPTIONS if not o.startswith('_')))}."
        )
    opts = dict(options)
    # resources are checked by building the request (negative, non-numeric, CPU in resources)
    request(
        opts.get("num_cpus"),
        opts.get("num_gpus"),
        opts.get("memory"),
        _resources_option(opts.get("resources"), where),
    )
    check_num_returns(opts.get("num_returns", 1), where)
    max_retries = opts.get("max_retries", DEFAULT_MAX_RETRIES)
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < -1:
        raise ValueError(f"max_retries for {where} must be an integer >= -1, got {max_retries!r}.")
    check_retry_exceptions(opts.get("retry_exceptions", False), where)
    env = opts.get("runtime_env")
    if env is not None and not isinstance(env, dict):
        raise ValueError(f"runtime_env for {where} must be a dict, got {env!r}.")
    ignored_options.warn_options(opts, ignored_options.TASK, "task")
    ignored_options.warn_runtime_env(env, "a task's runtime_env")
    return opts


def check_retry_exceptions(retry: Any, where: str) -> bool | tuple[type[BaseException], ...]:
    """``retry_exceptions`` as a spec holds it: a bool, or a tuple of
    exception classes; ValueError for anything else."""
    if isinstance(retry, bool):
        return retry
    if not isinstance(retry, (list, tuple)) or not all(
        isinstance(c, type) and issubclass(c, BaseException) for c in retry
    ):
        raise ValueError(
            f"retry_exceptions for {where} must be a bool or a list of exception classes, "
            f"got {retry!r}."
        )
    return tuple(retry)


def _resources_option(resources: Any, where: str) -> dict[str, float] | None:
    if resources is None:
        return None
    if not isinstance(resources, Mapping):
        raise ValueError(f"resources for {where} must be a dict, got {resources!r}.")
    return dict(resources)


class RemoteFunction(Generic[R]):
    """A function that runs as a task: call ``f.remote(*args)`` to get ObjectRefs."""

    def __init__(self, function: Callable[..., R], options: Mapping[str, Any]) -> None:
        self._function = function
        #: (worker id, job id) of a runtime -> (key, digest) of the upload: the
        #: worker id is random per runtime, so a later runtime never matches
        self._uploaded: dict[tuple[str, str], tuple[str, str]] = {}
        self._name = f"{function.__module__}.{function.__qualname__}"
        self._options = validate_task_options(options, f"remote function {self._name}")
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        self._is_generator = inspect.isgeneratorfunction(function)
        self.__name__ = getattr(function, "__name__", "remote_function")
        self.__doc__ = function.__doc__
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running "
            f"'{self.__name__}()', try '{self.__name__}.remote()'."
        )

    def __repr__(self) -> str:
        return f"<redray remote function {self._name}>"

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns an ObjectRef (or a list of them, or None)."""
        return self._submit(args, kwargs, self._options)

    def options(self, **options: Any) -> _BoundOptions[R]:
        """A copy of this function with options overridden for the next calls."""
        merged = {**self._options, **options}
        validate_task_options(options, f"remote function {self._name}")
        return _BoundOptions(self, validate_task_options(merged, f"remote function {self._name}"))

    def _submit(self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: dict[str, Any]) -> Any:
        runtime = session.current_runtime(required=True, auto_init=True)
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(
                    f"Wrong arguments for remote function {self._name}: {exc}"
                ) from None
        local = local_mode.active()
        if local is not None:
            packed, deps, _ = encode_args(runtime, args, kwargs, self._name)
            return local_mode.run_task(
                runtime, local, self._function, self._name, (packed, deps), opts
            )
        where = (runtime.worker_id, runtime.job_id)
        known = self._uploaded.get(where)
        if known is None:
            known = self._uploaded[where] = runtime.function_key(self._function, self._name)
        fn_key, digest = known
        units = request(
            opts.get("num_cpus"), opts.get("num_gpus"), opts.get("memory"), opts.get("resources")
        )
        shape = shape_of(units)
        runtime.check_shape(shape, f"Task {self._name}")
        tid = ids.task_id()
        packed, deps, holds = encode_args(runtime, args, kwargs, self._name)
        # a generator function streams its values by default, as in Ray
        default = "streaming" if self._is_generator else 1
        num_returns = opts.get("num_returns")
        if num_returns is None:
            num_returns = default
        returns = owned_returns(tid, num_returns)
        extra = None
        env = runtime_env.resolve(runtime, job_config.runtime_env_for(opts.get("runtime_env")))
        inherited = job_config.spec_extra()
        if env or opts.get("name") or inherited:
            extra = {"runtime_env": env, "name": opts.get("name"), **inherited}
        if opts.get("enable_task_events") is False:
            extra = {**(extra or {}), "task_events": False}  # task_events.EXTRA_FLAG
        retry = opts.get("retry_exceptions", False)
        spec = ts.TaskSpec(
            task_id=tid,
            job_id=runtime.job_id,
            function_key=fn_key,
            function_digest=digest,
            function_name=self._name,
            args=packed,
            deps=deps,
            num_returns=num_returns,
            owner=runtime.worker_id,
            max_retries=opts.get("max_retries", DEFAULT_MAX_RETRIES),
            retry_exceptions=tuple(retry) if isinstance(retry, (list, tuple)) else retry,
            extra=extra,
            namespace=runtime.namespace,
        )
        runtime.submit(tid, shape, ts.seal(runtime.signer, spec), deps, holds, returns)
        return result_of_call(runtime, tid, num_returns, returns)


class _BoundOptions(Generic[R]):
    def __init__(self, fn: RemoteFunction[R], options: dict[str, Any]) -> None:
        self._fn = fn
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._fn._submit(args, kwargs, self._options)


def encode_args(
    runtime: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str
) -> tuple[bytes, tuple[str, ...], list[ObjectRef[Any]]]:
    """Pack a task's arguments; top-level ObjectRefs become dependencies.

    Arguments too large to inline are stored as objects of their own (as Ray
    does above 100 KiB) and passed as dependencies.
    """
    deps: list[str] = []
    holds: list[ObjectRef[Any]] = []
    index: dict[str, int] = {}

    def dep(ref: ObjectRef[Any]) -> ts.DepArg:
        i = index.get(ref._id)
        if i is None:
            i = index[ref._id] = len(deps)
            deps.append(ref._id)
            holds.append(ref)
        return ts.DepArg(i)

    new_args = [dep(a) if isinstance(a, ObjectRef) else a for a in args]
    new_kwargs = {k: dep(v) if isinstance(v, ObjectRef) else v for k, v in kwargs.items()}
    frames = _dumps_args(runtime, new_args, new_kwargs, name)
    if frames_size(frames) > INLINE_LIMIT:
        for i, a in enumerate(new_args):
            if not isinstance(a, ts.DepArg) and _is_large(runtime, a):
                new_args[i] = dep(runtime.put(a))
        for k, v in new_kwargs.items():
            if not isinstance(v, ts.DepArg) and _is_large(runtime, v):
                new_kwargs[k] = dep(runtime.put(v))
        frames = _dumps_args(runtime, new_args, new_kwargs, name)
    return pack(frames), tuple(deps), holds


def _is_large(runtime: Any, value: Any) -> bool:
    return bool(frames_size(runtime.serializer.dumps(value)) > INLINE_LIMIT // 4)


def _dumps_args(runtime: Any, args: list[Any], kwargs: dict[str, Any], name: str) -> list[Any]:
    try:
        frames: list[Any] = runtime.serializer.dumps((args, kwargs))
        return frames
    except Exception as exc:
        culprit = _find_unpicklable(runtime, args, kwargs)
        raise TypeError(
            f"Could not serialize the argument {culprit} for a task of {name}: {exc!r}. "
            "Arguments must be picklable by cloudpickle; pass a picklable description "
            "and build the object inside the task instead."
        ) from exc


def _find_unpicklable(runtime: Any, args: list[Any], kwargs: dict[str, Any]) -> str:
    for i, a in enumerate(args):
        try:
            runtime.serializer.dumps(a)
        except Exception:
            return f"#{i} ({type(a).__name__} {_short(a)})"
    for k, v in kwargs.items():
        try:
            runtime.serializer.dumps(v)
        except Exception:
            return f"{k!r} ({type(v).__name__} {_short(v)})"
    return "(unknown)"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
