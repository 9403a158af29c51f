"""Actors: ``@remote`` on a class, handles, method calls, names, ``kill``.

An actor is created by a creation task that the scheduler places like any
task (``claim.lua`` reserves its resources on a node); the executor that runs
it becomes the actor's process and serves its mailbox, a Redis stream, until
the actor dies. Method calls are appended to the mailbox by any caller, in
submission order, through the caller's submission batch.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from . import control, ids, ignored_options, job_config, local_mode, runtime_env, session
from . import task_spec as ts
from .constants import RESOURCE_UNIT
from .exceptions import ActorAlreadyExistsError, AsyncioActorExit, PendingCallsLimitExceeded
from .generator import check_num_returns, owned_returns, result_of_call
from .remote_function import check_retry_exceptions, encode_args
from .resources import request, shape_of

if TYPE_CHECKING:
    from .runtime import Runtime

T = TypeVar("T")

ACTOR_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "resources",
        "memory",
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_restarts",
        "max_task_retries",
        "max_concurrency",
        "max_pending_calls",
        "runtime_env",
        "scheduling_strategy",
        "concurrency_groups",
        "accelerator_type",
        "object_store_memory",
        "placement_group",
        "placement_group_bundle_index",
        "placement_group_capture_child_tasks",
        "label_selector",
        "fallback_strategy",
        "enable_task_events",
        "allow_out_of_order_execution",
        "_metadata",
    }
)

METHOD_OPTIONS = frozenset(
    {
        "num_returns",
        "concurrency_group",
        "max_task_retries",
        "retry_exceptions",
        "name",
        "enable_task_events",
        "_generator_backpressure_num_objects",
        "tensor_transport",
    }
)


def validate_actor_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    unknown = sorted(set(options) - ACTOR_OPTIONS)
    if unknown:
        raise ValueError(
            f"Invalid option {unknown[0]!r} for {where}. Valid options are: "
            f"{', '.join(sorted(o for o in ACTOR_OPTIONS if not o.startswith('_')))}."
        )
    opts = dict(options)
    request(opts.get("num_cpus"), opts.get("num_gpus"), opts.get("memory"), opts.get("resources"))
    lifetime = opts.get("lifetime")
    if lifetime not in (None, "detached", "non_detached"):
        raise ValueError(
            f"lifetime for {where} must be None, 'detached' or 'non_detached', got {lifetime!r}."
        )
    name = opts.get("name")
    namespace = opts.get("namespace")
    # as Ray: the wrong type is a TypeError, an empty string a ValueError
    for option, value in (("name", name), ("namespace", namespace)):
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"{option} for {where} must be None or a string, got {type(value).__name__} "
                f"{value!r}."
            )
        if value == "":
            raise ValueError(f"{option} for {where} cannot be an empty string.")
    for key, low in (("max_restarts", -1), ("max_task_retries", -1), ("max_pending_calls", -1)):
        value = opts.get(key)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < low
        ):
            raise ValueError(f"{key} for {where} must be an integer >= {low}, got {value!r}.")
    conc = opts.get("max_concurrency")
    if conc is not None and (isinstance(conc, bool) or not isinstance(conc, int) or conc < 1):
        raise ValueError(f"max_concurrency for {where} must be an integer >= 1, got {conc!r}.")
    groups = opts.get("concurrency_groups")
    if groups is not None:
        if not isinstance(groups, Mapping) or not all(
            isinstance(g, str) and g and type(n) is int and n >= 1 for g, n in groups.items()
        ):
            raise ValueError(
                f"concurrency_groups for {where} must map group names to their max "
                f"concurrency (integers >= 1), got {groups!r}."
            )
        opts["concurrency_groups"] = dict(groups)
    env = opts.get("runtime_env")
    if env is not None and not isinstance(env, Mapping):
        raise ValueError(f"runtime_env for {where} must be a dict, got {env!r}.")
    ignored_options.warn_options(opts, ignored_options.ACTOR, "actor")
    ignored_options.warn_runtime_env(env, "an actor's runtime_env")
    return opts


def check_group(group: Any, groups: Mapping[str, int] | None, where: str) -> None:
    """ValueError unless ``group`` (a method's ``concurrency_group``) is one
    of the actor's ``concurrency_groups``; Ray's actor dies of a bad one."""
    if group is None:
        return
    if not isinstance(group, str) or group not in (groups or {}):
        known = ", ".join(sorted(groups or {})) or "none"
        raise ValueError(
            f"concurrency_group {group!r} of {where} is not one of the actor's "
            f"concurrency_groups ({known}). Add it to @remote(concurrency_groups={{...}})."
        )


def _method_table(cls: type) -> dict[str, dict[str, Any]]:
    """Public methods of an actor class with their ``@method`` options."""
    table: dict[str, dict[str, Any]] = {}
    for name, member in inspect.getmembers(cls):
        if name.startswith("__") and name not in ("__call__",):
            continue
        fn = member
        if not (inspect.isfunction(fn) or inspect.ismethod(fn)):
            continue
        opts = dict(getattr(fn, "__redray_method_options__", {}))
        # checked here, read by the actor from its class when a call fails
        retry_options(opts, f"actor method {cls.__name__}.{name}")
        generator = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        n = opts.get("num_returns")
        if n is None:
            n = "streaming" if generator else 1
        table[name] = {
            "num_returns": check_num_returns(n, f"actor method {cls.__name__}.{name}"),
            "params": _params(cls, name, fn),
        }
        if opts.get("concurrency_group") is not None:
            table[name]["group"] = opts["concurrency_group"]
        if opts.get("enable_task_events") is not None:
            table[name]["events"] = opts["enable_task_events"]
    return table


def _check_events(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"enable_task_events for {where} must be True or False, got {value!r}.")
    return value


def retry_options(options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ``max_task_retries`` / ``retry_exceptions`` an actor method's
    options set (checked; ValueError naming the bad one), other options
    checked for their names only."""
    bad = sorted(set(options) - METHOD_OPTIONS)
    if bad:
        raise ValueError(f"Invalid option {bad[0]!r} for {where}.")
    out: dict[str, Any] = {}
    if options.get("max_task_retries") is not None:
        value = options["max_task_retries"]
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError(
                f"max_task_retries for {where} must be an integer >= -1, got {value!r}."
            )
        out["max_task_retries"] = value
    if options.get("retry_exceptions") is not None:
        out["retry_exceptions"] = check_retry_exceptions(options["retry_exceptions"], where)
    if options.get("enable_task_events") is not None:
        out["task_events"] = _check_events(options["enable_task_events"], where)
    ignored_options.warn_options(options, ignored_options.METHOD, "actor method")
    return out


def _params(cls: type, name: str, fn: Any) -> list[list[Any]] | None:
    """The method's parameters as ``[name, kind, has default]`` (JSON, kept in
    the actor's record), without ``self``: handles check each call against
    them, as Ray does; None when the signature cannot be read."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError, KeyError):
        return None
    params = list(sig.parameters.values())
    if inspect.isfunction(fn) and not isinstance(
        inspect.getattr_static(cls, name, None), staticmethod
    ):
        params = params[1:]  # self
    return [[p.name, int(p.kind), p.default is not p.empty] for p in params]


_P = inspect.Parameter
_KINDS = {
    int(kind): kind
    for kind in (
        _P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD, _P.VAR_POSITIONAL, _P.KEYWORD_ONLY,
        _P.VAR_KEYWORD,
    )
}  # fmt: skip


def _signature(params: list[list[Any]] | None) -> inspect.Signature | None:
    if params is None:
        return None
    try:
        return inspect.Signature(
            [
                inspect.Parameter(n, _KINDS[k], default=None if d else inspect.Parameter.empty)
                for n, k, d in params
            ]
        )
    except (TypeError, ValueError, KeyError):
        return None


def _positional_range(signature: inspect.Signature | None) -> tuple[int, float] | None:
    """(fewest, most) positional arguments a call may pass, when positional
    arguments alone decide whether it binds (no keyword-only parameter
    without a default); else None."""
    if signature is None:
        return None
    fewest, most = 0, 0.0
    for p in signature.parameters.values():
        if p.kind in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
            most += 1
            if p.default is _P.empty:
                fewest += 1
        elif p.kind is _P.VAR_POSITIONAL:
            most = float("inf")
        elif p.kind is _P.KEYWORD_ONLY and p.default is _P.empty:
            return None
    return fewest, most


def is_async_class(cls: type) -> bool:
    return any(
        inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
        for _, m in inspect.getmembers(cls, inspect.isfunction)
    )


class ActorClass(Generic[T]):
    """A class made remote: ``Cls.remote(*args)`` creates an actor."""

    def __init__(self, cls: type[T], options: Mapping[str, Any]) -> None:
        self._cls = cls
        self._name = f"{cls.__module__}.{cls.__qualname__}"
        self._options = validate_actor_options(options, f"actor class {self._name}")
        self._methods = _method_table(cls)
        self._is_async = is_async_class(cls)
        try:
            self._init_signature: inspect.Signature | None = inspect.signature(cls.__init__)
        except (TypeError, ValueError):
            self._init_signature = None
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{self.__name__}()', "
            f"use '{self.__name__}.remote()'."
        )

    def __repr__(self) -> str:
        return f"<redray actor class {self._name}>"

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        return self._create(args, kwargs, self._options)

    def options(self, **options: Any) -> _ActorOptions[T]:
        validate_actor_options(options, f"actor class {self._name}")
        merged = validate_actor_options({**self._options, **options}, f"actor class {self._name}")
        return _ActorOptions(self, merged)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("Ray DAGs (bind) are not supported by redray.")

    def _create(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], opts: dict[str, Any]
    ) -> ActorHandle[T]:
        runtime = session.current_runtime(required=True, auto_init=True)
        if self._init_signature is not None:
            try:
                self._init_signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"Wrong arguments for {self._name}.__init__: {exc}") from None
        namespace = opts.get("namespace") or runtime.namespace
        name = opts.get("name")
        name_key = f"{namespace}:{name}" if name else ""
        detached = job_config.actor_lifetime(opts.get("lifetime")) == "detached"
        explicit = any(
            opts.get(k) is not None for k in ("num_cpus", "num_gpus", "memory", "resources")
        )
        # Ray: 1 CPU to place an actor that asked for nothing, 0 while it runs
        cpus = opts.get("num_cpus")
        units = request(
            cpus if cpus is not None else (0 if explicit else 1),
            opts.get("num_gpus"),
            opts.get("memory"),
            opts.get("resources"),
        )
        release_cpu = 0 if explicit else RESOURCE_UNIT
        shape = shape_of(units)
        local = local_mode.active()
        if local is None:
            runtime.check_shape(shape, f"Actor {self._name}")
        actor_id = "a" + ids.random_id(12)
        tid = ids.task_id()
        # everything that can fail on bad input happens before the actor (and
        # its name) is registered: a failed creation must not hold the name
        fn_key, digest = runtime.function_key(self._cls, self._name)
        packed, deps, holds = encode_args(runtime, args, kwargs, f"{self._name}.__init__")
        groups = opts.get("concurrency_groups")
        for method, entry in self._methods.items():
            check_group(entry.get("group"), groups, f"method {self.__name__}.{method}")
        meta = {
            "class_name": self.__name__,
            "qualname": self._name,
            "methods": self._methods,
            "is_async": self._is_async,
            "groups": groups or {},
        }
        if opts.get("enable_task_events") is not None:
            meta["events"] = _check_events(opts["enable_task_events"], f"actor {self._name}")
        max_restarts = opts.get("max_restarts") or 0
        fields = {
            "class_name": self._name,
            "name": name or "",
            "namespace": namespace,
            "name_key": name_key,
            "job": runtime.job_id,
            "detached": "1" if detached else "0",
            "task": tid,
            "meta": json.dumps(meta),
            "max_restarts": max_restarts,
            "max_task_retries": opts.get("max_task_retries") or 0,
            "shape": shape,
        }
        status, existing = runtime.scripts.create_actor(
            actor_id=actor_id,
            job_id=runtime.job_id,
            name_key=name_key,
            detached=detached,
            fields=fields,
        )
        if status == "exists":
            if opts.get("get_if_exists"):
                return get_actor(name or "", namespace)
            raise ActorAlreadyExistsError(
                f"The name {name!r} (namespace={namespace!r}) is already taken by another actor. "
                "Use get_if_exists=True to get a handle to it, or pick another name."
            )
        if local is not None:
            local_mode.create_actor(runtime, local, actor_id, self._cls, self._name, (packed, deps))
            return ActorHandle(actor_id, meta, opts.get("max_pending_calls", -1))
        spec = ts.TaskSpec(
            task_id=tid,
            job_id=runtime.job_id,
            function_key=fn_key,
            function_digest=digest,
            function_name=self._name,
            args=packed,
            deps=deps,
            num_returns=0,
            owner=runtime.worker_id,
            max_retries=max_restarts,
            retry_exceptions=False,
            extra={
                "actor": actor_id,
                "release_cpu": release_cpu,
                "name": name or "",
                "namespace": namespace,
                "max_concurrency": opts.get("max_concurrency"),
                "concurrency_groups": groups or {},
                "max_task_retries": opts.get("max_task_retries") or 0,
                "runtime_env": runtime_env.resolve(
                    runtime, job_config.runtime_env_for(opts.get("runtime_env"))
                ),
                "is_async": self._is_async,
                **job_config.spec_extra(),
            },
        )
        runtime.submit(tid, shape, ts.seal(runtime.signer, spec), deps, holds, [])
        handle: ActorHandle[T] = ActorHandle(actor_id, meta, opts.get("max_pending_calls", -1))
        return handle


class _ActorOptions(Generic[T]):
    def __init__(self, cls: ActorClass[T], options: dict[str, Any]) -> None:
        self._cls = cls
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        return self._cls._create(args, kwargs, self._options)


class ActorMethod:
    """``handle.method``: call ``.remote(*args)`` for an ObjectRef."""

    def __init__(
        self,
        handle: ActorHandle[Any],
        name: str,
        num_returns: Any,
        signature: inspect.Signature | None = None,
        call_options: dict[str, Any] | None = None,
    ) -> None:
        self._handle = handle
        self._name = name
        self._num_returns = num_returns
        self._signature = signature
        #: max_task_retries / retry_exceptions / concurrency_group given with
        #: .options(): they win over the method's @method options and the
        #: actor's defaults (the actor reads them from the call's spec)
        self._call_options = call_options
        #: (fewest, most) positional arguments when a call without keywords
        #: needs no full bind() (most calls: bind costs microseconds per call)
        self._positional = _positional_range(signature)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'{self._name}()', try '{self._name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        fast = self._positional
        if self._signature is not None and not (
            fast is not None and not kwargs and fast[0] <= len(args) <= fast[1]
        ):
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"Wrong arguments for actor method {self._name}: {exc}") from None
        return self._handle._call(self._name, args, kwargs, self._num_returns, self._call_options)

    def options(self, **options: Any) -> ActorMethod:
        where = f"actor method {self._name}"
        call = {**(self._call_options or {}), **retry_options(options, where)}
        if options.get("concurrency_group") is not None:
            check_group(options["concurrency_group"], self._handle._meta.get("groups"), where)
            call["concurrency_group"] = options["concurrency_group"]
        if options.get("name") is not None:
            if not isinstance(options["name"], str):
                raise TypeError(
                    f"name for {where} must be a string, got {type(options['name']).__name__} "
                    f"{options['name']!r}."
                )
            call["name"] = options["name"]  # the call's task name (get_task_name, state API)
        n = check_num_returns(options.get("num_returns"), where)
        if n is None:
            n = self._num_returns
        return ActorMethod(self._handle, self._name, n, self._signature, call or None)


#: methods every actor has, as in Ray: ``__ray_ready__()`` (True once the
#: actor is up), ``__ray_call__(fn, *args)`` (``fn(actor, *args)`` in the
#: actor) and ``__ray_terminate__()`` (``ray.kill`` after queued calls)
BUILTIN_METHODS = ("__ray_ready__", "__ray_call__", "__ray_terminate__")


class ActorHandle(Generic[T]):
    """A handle to an actor: call its methods with ``handle.method.remote()``.

    Handles can be passed to tasks and other actors and returned from them.
    """

    def __init__(
        self, actor_id: str, meta: dict[str, Any], max_pending_calls: int | None = -1
    ) -> None:
        self._actor_id = actor_id
        self._meta = meta
        self._max_pending = -1 if max_pending_calls is None else max_pending_calls
        self._pending: list[str] = []
        #: method name -> its ActorMethod (signatures are built once per handle)
        self._methods: dict[str, ActorMethod] = {}

    def __getattr__(self, name: str) -> ActorMethod:
        if name in BUILTIN_METHODS:
            return ActorMethod(self, name, 1)
        if name.startswith("__"):
            raise AttributeError(name)
        methods = self.__dict__.get("_meta", {}).get("methods", {})
        if name not in methods:
            raise AttributeError(f"'{self._meta.get('class_name')}' actor has no method {name!r}.")
        made = self.__dict__.get("_methods")
        method = made.get(name) if made is not None else None
        if method is None:
            entry = methods[name]
            # Ray: the method's @method(enable_task_events=) wins over the actor's
            events = entry.get("events", self._meta.get("events", True))
            method = ActorMethod(
                self,
                name,
                entry["num_returns"],
                _signature(entry.get("params")),
                None if events is not False else {"task_events": False},
            )
            if made is not None:
                made[name] = method
        return method

    def __repr__(self) -> str:
        return f"Actor({self._meta.get('class_name')}, {self._actor_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __reduce__(self) -> Any:
        return (ActorHandle, (self._actor_id, self._meta, self._max_pending))

    def _call(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        num_returns: Any,
        call_options: dict[str, Any] | None = None,
    ) -> Any:
        runtime = session.current_runtime(required=True, auto_init=True)
        if self._max_pending > 0:
            self._pending = [
                t for t in self._pending if not runtime.refs.is_ready(ids.return_id(t, 1))
            ]
            if len(self._pending) >= self._max_pending:
                raise PendingCallsLimitExceeded(
                    f"Actor {self._actor_id} has {len(self._pending)} calls pending, the "
                    f"max_pending_calls limit. Wait for some results before calling again."
                )
        qualname = f"{self._meta.get('class_name')}.{method}"
        tid = ids.task_id()
        packed, deps, holds = encode_args(runtime, args, kwargs, qualname)
        local = local_mode.active()
        if local is not None:
            return local_mode.call_method(
                runtime, local, self._actor_id, method, qualname, (packed, deps), num_returns
            )
        returns = owned_returns(tid, num_returns)
        spec = ts.TaskSpec(
            task_id=tid,
            job_id=runtime.job_id,
            function_key="",
            function_digest="",
            function_name=qualname,
            args=packed,
            deps=deps,
            num_returns=num_returns,
            owner=runtime.worker_id,
            max_retries=0,
            retry_exceptions=False,
            extra={"method": method, "actor": self._actor_id, **(call_options or {})},
            namespace=runtime.namespace,
        )
        runtime.submit_actor_call(
            self._actor_id, tid, ts.seal(runtime.signer, spec, self._actor_id), holds, returns
        )
        if self._max_pending > 0 and num_returns:
            self._pending.append(tid)
        return result_of_call(runtime, tid, num_returns, returns)


class ActorExit(SystemExit):
    """Raised by ``exit_actor()`` in a sync or threaded actor: a SystemExit,
    so the method's own ``except Exception`` does not stop the exit."""


def exit_actor() -> NoReturn:
    """Ray's ``ray.actor.exit_actor()``: end the current actor on purpose,
    from one of its methods. The actor is not restarted; the call that
    exits and the calls queued behind it raise ``ActorDiedError``."""
    runtime = session.current_runtime(required=False)
    if runtime is None or runtime.current_actor is None:
        raise TypeError(
            "exit_actor() was called outside an actor. Call it inside an actor method to "
            "end that actor, or use redray.kill(handle) from elsewhere."
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ActorExit(0) from None
    # an asyncio actor: a SystemExit would stop its event loop instead
    raise AsyncioActorExit()


def handle_of(runtime: Runtime, actor_id: str) -> ActorHandle[Any]:
    meta_raw = runtime.client.hget(runtime.keys.actor(actor_id), "meta")
    meta = json.loads(meta_raw) if meta_raw else {"class_name": "?", "methods": {}}
    return ActorHandle(actor_id, meta)


def list_named_actors(all_namespaces: bool = False) -> list[str] | list[dict[str, str]]:
    """Ray's ``ray.util.list_named_actors``: the names of the live named
    actors in this job's namespace, or with ``all_namespaces`` every one as
    ``{"name": ..., "namespace": ...}``."""
    from .actor_lifecycle import actor_info

    runtime = session.current_runtime(required=True, auto_init=True)
    entries: Any = runtime.client.hgetall(runtime.keys.actor_names)
    found: list[dict[str, str]] = []
    for raw_id in sorted(set(entries.values())):
        info = actor_info(runtime.cluster, raw_id.decode())
        # the info record says which namespace and name (either may hold ':')
        if info and info.get("name") and info.get("state") != "DEAD":
            found.append({"name": info["name"], "namespace": info.get("namespace", "")})
    found.sort(key=lambda e: (e["namespace"], e["name"]))
    if all_namespaces:
        return found
    return [e["name"] for e in found if e["namespace"] == runtime.namespace]


def get_actor(name: str, namespace: str | None = None) -> ActorHandle[Any]:
    """The handle of a live named actor; ValueError when there is none."""
    runtime = session.current_runtime()
    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor() needs a non-empty actor name, got {name!r}.")
    ns = namespace if namespace is not None else runtime.namespace
    keys = runtime.keys
    actor_id: Any = runtime.client.hget(keys.actor_names, f"{ns}:{name}")
    if actor_id is None:
        raise ValueError(
            f"Failed to look up actor with name {name!r} in namespace {ns!r}: no live actor has "
            "that name. Check the name and the namespace (init(namespace=...) or "
            "get_actor(name, namespace=...))."
        )
    return handle_of(runtime, actor_id.decode())


def kill(handle: ActorHandle[Any], *, no_restart: bool = True) -> None:
    """End an actor at once; its pending and later calls raise ActorDiedError.

    With ``no_restart=False`` the actor is restarted if its ``max_restarts``
    allows, as if its process had died.
    """
    if not isinstance(handle, ActorHandle):
        raise ValueError(f"kill() expects an ActorHandle, got {type(handle).__name__}.")
    runtime = session.current_runtime()
    from .actor_lifecycle import actor_info, end_actor, finish_unplaced

    cluster = runtime.cluster
    local = local_mode.active()
    if local is not None:
        # no process to stop: the actor ends here, its name is freed in Redis
        local_mode.kill_actor(local, handle._actor_id)
        end_actor(cluster, handle._actor_id, "was killed with redray.kill()")
        return
    if no_restart:
        end_actor(cluster, handle._actor_id, "was killed with redray.kill()")
        return
    info = actor_info(cluster, handle._actor_id)
    if not info:
        return
    node, worker = info.get("node", ""), info.get("worker", "")
    if node and worker:
        # its node sees the process exit and restarts it (max_restarts allowing)
        control.kill(cluster, node, worker)
    else:
        # not placed yet: take its creation task out of the queue
        finish_unplaced(cluster, handle._actor_id)
