"""The module-level API: ``init``, ``remote``, ``get``, ``wait``, ``put``, ...

Names, arguments and behaviour follow Ray's; ``import redray as ray`` keeps a
Ray program working.
"""

from __future__ import annotations

import atexit
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import redis

from . import connections, ids, jobs, session
from . import local_mode as local_mode_
from .connections import connection_error
from .constants import (
    ADDRESS_FILE_NAME,
    DASHBOARD_FILE_NAME,
    SECRET_FILE_NAME,
    Keys,
)
from .context import ClusterContext, RuntimeContext
from .generator import ObjectRefGenerator
from .ignored_options import is_silent, warn_once, warn_runtime_env
from .job_config import JobConfig, set_job_defaults, validate_runtime_env
from .local_cluster import LocalCluster, dashboard_options, local_totals
from .log_stream import LogPrinter
from .object_ref import ObjectRef
from .remote_function import RemoteFunction
from .resources import from_units, node_info, units_of
from .runtime import Runtime
from .runtime_env import resolve as resolve_runtime_env
from .serialization import Serializer
from .settings import Settings

R = TypeVar("R")

log = logging.getLogger(__name__)

_NO_LOGGING = (
    "redray does not configure logging: set levels and formats with the logging "
    "module (its loggers are under 'redray')"
)
_NO_ISOLATION = "redray does not isolate its workers' resources (no cgroups)"
_IN_REDIS = "objects live in the Redis server's memory: bound it with the server's maxmemory"

#: init() keywords Ray accepts that redray does not act on: keyword -> (the
#: values that ask for nothing redray fails to do, which stay silent; what
#: redray does instead, said once per process when any other value is given)
_IGNORED_INIT_OPTIONS: dict[str, tuple[tuple[Any, ...], str]] = {
    "allow_multiple": ((None, False), "one driver connection per process"),
    "storage": ((None,), "no cluster storage: objects live in the Redis server"),
    # redray never configures logging: neither value asks for what it does not do
    "configure_logging": ((True, False), ""),
    "logging_level": ((None, "info", "INFO", logging.INFO), _NO_LOGGING),
    "logging_format": ((None,), _NO_LOGGING),
    "logging_config": ((None,), _NO_LOGGING),
    "object_store_memory": ((None,), _IN_REDIS),
    "_driver_object_store_memory": ((None,), _IN_REDIS),
    "_temp_dir": ((None,), "redray keeps its session files under the system temp directory"),
    "_system_config": ((None, {}), "redray has no Ray system config"),
    "_enable_object_reconstruction": ((False,), "redray does not reconstruct lost objects"),
    "_plasma_directory": ((None,), _IN_REDIS),
    "object_spilling_directory": ((None,), "redray does not spill objects to disk"),
    "_node_ip_address": ((None,), "processes reach each other through the Redis server"),
    "_metrics_export_port": ((None,), "redray exports no metrics"),
    "_memory": ((None,), "a local node gets no memory resource from init()"),
    "labels": ((None, {}), "redray's nodes have no labels"),
    "enable_resource_isolation": ((False,), _NO_ISOLATION),
    "cgroup_path": ((None,), _NO_ISOLATION),
    "system_reserved_cpu": ((None,), _NO_ISOLATION),
    "system_reserved_memory": ((None,), _NO_ISOLATION),
    "proxy_server_url": ((None,), "drivers connect to the Redis server directly"),
    "_redis_username": (
        (None, ""),
        "give the credentials in the address: redis://user:password@host:port",
    ),
    "_redis_password": (
        (None, ""),
        "give the credentials in the address: redis://user:password@host:port",
    ),
    "_tracing_startup_hook": ((None,), "redray has no tracing"),
    "_node_name": ((None,), "a local node is named by its node id"),
    # redray has no runtime_env hook to skip
    "_skip_env_hook": ((False, True), ""),
}


def _warn_ignored(
    kwargs: dict[str, Any], job_config: JobConfig, runtime_env: dict[str, Any], env_from: str
) -> None:
    """Warn once per process for each option given that redray cannot honour."""
    for name, value in kwargs.items():
        silent, why = _IGNORED_INIT_OPTIONS[name]
        if not is_silent(value, silent):
            # the value is not shown: it may be a password (_redis_password)
            warn_once(name, f"redray ignores init({name}=...): {why}.")
    for name, why in job_config._unsupported():
        warn_once(f"job_config.{name}", f"redray ignores JobConfig {name}: {why}.")
    warn_runtime_env(runtime_env, env_from)


class _Global:
    """What this process's ``init`` set up (the runtime itself is in session.py)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: the private cluster init() started (empty when it joined one)
        self.local = LocalCluster()
        self.is_driver = False
        self.log_printer: LogPrinter | None = None


_global = _Global()

current_runtime = session.current_runtime
set_runtime = session.set_runtime


def is_initialized() -> bool:
    """True once ``init`` has run in this process (and ``shutdown`` has not)."""
    return session.is_initialized()


def address_file() -> Path:
    # "redray-sessions", not "redray": a directory named like the package in
    # the temp dir would shadow it for scripts run from there
    return Path(tempfile.gettempdir()) / "redray-sessions" / ADDRESS_FILE_NAME


def secret_file() -> Path:
    """Where ``redray start --head`` keeps the cluster secret (mode 0600)."""
    return address_file().with_name(SECRET_FILE_NAME)


def dashboard_file() -> Path:
    """Where ``redray start --head`` keeps its dashboard's URL."""
    return address_file().with_name(DASHBOARD_FILE_NAME)


def started_dashboard(address: str | None) -> str:
    """The dashboard ``redray start --head`` runs for the cluster at
    ``address`` (``host:port``, as Ray's ``dashboard_url``); "" when none."""
    try:
        if address is None or address_file().read_text().strip() != address:
            return ""
        return dashboard_file().read_text().strip()
    except OSError:
        return ""


def resolve_secret(address: str | None, explicit: str | None = None) -> str | None:
    """The cluster secret: given, else ``REDRAY_SECRET``, else, for the
    cluster ``redray start`` started on this machine, its secret file."""
    if explicit:
        return explicit
    env = os.environ.get("REDRAY_SECRET")
    if env:
        return env
    path = secret_file()
    if address is not None and path.exists():
        try:
            started = address_file().read_text().strip()
        except OSError:
            started = ""
        if started and started == address:
            return path.read_text().strip() or None
    return None


def _running_head() -> str | None:
    """The address ``redray start --head`` left on this machine, if its
    server answers; None when there is none (a stale file is said once)."""
    path = address_file()
    try:
        address = path.read_text().strip()
    except OSError:
        return None
    if not address:
        return None
    try:
        settings = Settings.from_url(address, connect_timeout=1.0)
        client = connections.client(settings.replace(outage_budget=0.0))
    except ValueError:
        return None
    try:
        client.ping()
    except (redis.RedisError, OSError):
        log.warning(
            "%s names a redray cluster that does not answer (its head stopped without "
            "`redray stop`?): starting a new local cluster instead.",
            path,
        )
        return None
    finally:
        client.close()
    log.info("Connecting to the existing redray cluster at %s.", settings.display)
    return address


def _resolve_address(address: str | None) -> str | None:
    """Where ``init(address)`` connects; None: start a private cluster.

    As Ray: ``REDRAY_ADDRESS`` first, then, for no address, the cluster
    ``redray start --head`` runs on this machine; ``"local"`` always starts
    a private one; ``"auto"`` must find a running cluster.
    """
    if address in (None, "", "local"):
        if address is None:
            env = os.environ.get("REDRAY_ADDRESS")
            if env:
                return env if env != "auto" else _resolve_address("auto")
            return _running_head()
        return None
    if address == "auto":
        env = os.environ.get("REDRAY_ADDRESS")
        if env and env != "auto":
            return env
        path = address_file()
        if path.exists():
            text = path.read_text().strip()
            if text:
                return text
        raise ConnectionError(
            "Could not find a running redray cluster: REDRAY_ADDRESS is unset and "
            f"{path} does not exist. Start one with `redray start --head`."
        )
    return address


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    job_config: JobConfig | None = None,
    runtime_env: dict[str, Any] | None = None,
    log_to_driver: bool = True,
    serializer: Serializer | None = None,
    _redis_server: str | None = None,
    _node_startup_timeout: float = 30.0,
    _job_grace_s: float | None = None,
    _secret: str | None = None,
    local_mode: bool = False,
    **kwargs: Any,
) -> ClusterContext:
    """Connect to a cluster, or start a private one on this machine.

    With no ``address`` (and no ``REDRAY_ADDRESS``), joins the cluster
    ``redray start --head`` runs on this machine, as Ray does; when none runs
    (or with ``address="local"``), starts a Redis-compatible server on a free
    loopback port and a worker node with ``num_cpus``, ``num_gpus`` and
    ``resources``. ``address="auto"`` must find a running cluster;
    ``address="redis://host:port/db"`` connects to that one.

    ``namespace``: the job's namespace (by default ``job_config``'s
    ``ray_namespace``, else a fresh one). ``runtime_env``: the job's default
    runtime environment for its tasks and actors (replacing ``job_config``'s),
    merged under their own; redray applies its ``env_vars``, ``working_dir``,
    ``py_modules`` and ``excludes`` (redray/runtime_env.py). ``job_config``: a
    ``redray.job_config.JobConfig``; its ``default_actor_lifetime`` applies to
    actors created without a ``lifetime``.

    ``local_mode=True`` (Ray's deprecated local mode, for debugging): tasks
    and actors run in this process, synchronously, at ``.remote()``; a
    private cluster is then only its Redis server, with no node (see
    redray/local_mode.py). With an address, tasks run here and objects live
    in that cluster, as in Ray.

    ``include_dashboard=True`` (with ``dashboard_host``, ``dashboard_port``;
    127.0.0.1:8265 by default) starts a dashboard (``redray dashboard``) for
    a private cluster, stopped with it; its address is the context's
    ``dashboard_url``. Joining a cluster, ``dashboard_url`` is the dashboard
    ``redray start --head`` started there, if any.

    Ray's other keywords (``object_store_memory``, logging, ...) are
    accepted; one set to a value that asks for something redray does not do
    warns once per process, naming it.

    ``_job_grace_s`` (redray only): how long this driver may stay silent
    (paused, cut off from Redis) before the cluster reaps its job; 90 s by
    default. A driver that comes back later gets ``JobReapedError``.

    ``_secret`` (redray only; by default ``REDRAY_SECRET``, or the secret
    ``redray start`` keeps for the cluster it started here): the cluster
    secret that signs every payload redray unpickles (docs/architecture.md,
    section 13). A private cluster without one does not sign.
    """
    dashboard = dashboard_options(kwargs)
    unknown = sorted(set(kwargs) - _IGNORED_INIT_OPTIONS.keys())
    if unknown:
        raise TypeError(f"init() got an unexpected keyword argument {unknown[0]!r}")
    grace = jobs.DEFAULT_GRACE if _job_grace_s is None else float(_job_grace_s)
    if grace <= 0:
        raise ValueError(
            f"_job_grace_s must be a positive number of seconds, got {_job_grace_s!r}."
        )
    if job_config is None:
        job_config = JobConfig()
    elif not isinstance(job_config, JobConfig):
        raise TypeError(
            f"job_config must be a redray.job_config.JobConfig, got {type(job_config).__name__}."
        )
    # as Ray does: init's namespace and runtime_env replace the JobConfig's own
    if namespace is not None:
        job_config.set_ray_namespace(namespace)
    env_from = "JobConfig(runtime_env=...)"
    if runtime_env:
        job_config.set_runtime_env(runtime_env)
        env_from = "init(runtime_env=...)"
    job_env = validate_runtime_env(job_config.runtime_env)
    with _global.lock:
        existing = session.current_runtime(required=False)
        if existing is not None:
            if ignore_reinit_error:
                return _cluster_context(existing)
            raise RuntimeError(
                "Maybe you called redray.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'redray.shutdown()' "
                "prior to 'redray.init()'."
            )
        _warn_ignored(kwargs, job_config, job_env, env_from)
        resolved = _resolve_address(address)
        if resolved is not None and (num_cpus is not None or num_gpus is not None or resources):
            raise ValueError(
                "When connecting to an existing cluster, num_cpus, num_gpus and resources "
                "must not be provided: they belong to the nodes (`redray worker --num-cpus`)."
            )
        secret = resolve_secret(resolved, _secret)
        try:
            if resolved is None and local_mode:
                settings = _global.local.start_server_only(_redis_server, secret)
            elif resolved is None:
                settings = _global.local.start(num_cpus, num_gpus, resources, _redis_server, secret)
            else:
                settings = Settings.from_url(resolved, secret=secret)
            runtime = _connect(settings, job_config.ray_namespace, serializer, grace)
        except BaseException:
            _teardown_local()
            raise
        if resolved is None and not local_mode:
            try:
                # the node imports while the driver connected: both take a while
                _global.local.wait_node(settings, _node_startup_timeout)
            except BaseException:
                runtime.close()
                _teardown_local()
                raise
        if local_mode:
            totals = local_totals(num_cpus, num_gpus, resources) if resolved is None else None
            local_mode_.start(runtime.node_id or "", totals)
        session.set_runtime(runtime)
        _global.is_driver = True
        try:
            # the job's working_dir and py_modules are shipped now, as in Ray
            job_env = resolve_runtime_env(runtime, job_env) or {}
        except BaseException:
            shutdown()
            raise
        set_job_defaults(job_env, job_config._default_actor_lifetime)
        if dashboard is not None and resolved is None and not local_mode:
            _global.local.start_dashboard(settings, *dashboard)
        if log_to_driver:
            _global.log_printer = LogPrinter(
                runtime.client,
                runtime.keys.job_logs(runtime.job_id),
                dedup=os.environ.get("REDRAY_DEDUP_LOGS", "1") != "0",
            )
            _global.log_printer.start()
        return _cluster_context(runtime)


def _cluster_context(runtime: Runtime) -> ClusterContext:
    local = _global.local
    context = ClusterContext(runtime, shutdown, local.directory)
    context.set_dashboard_url(local.dashboard_url or started_dashboard(runtime.settings.to_url()))
    return context


def _connect(
    settings: Settings, namespace: str | None, serializer: Serializer | None, grace: float
) -> Runtime:
    keys = Keys(settings.prefix)
    # a server that never answered is a wrong address more often than a blip
    client = connections.client(settings.replace(outage_budget=min(settings.outage_budget, 3.0)))
    try:
        client.ping()
        # re-sent after a lost reply it skips a number: job ids stay unique
        number = int(client.incr(keys.job_counter))
    except redis.ConnectionError as exc:
        raise connection_error(settings, exc) from exc
    finally:
        client.close()
    job_id = f"{number:08x}"
    worker_id = "driver-" + ids.random_id(8)
    ns = namespace if namespace is not None else ids.random_id(8)
    # registered before the runtime starts heartbeating (a beat for an
    # unknown job means "reaped")
    runtime = Runtime(
        settings,
        job_id,
        worker_id,
        namespace=ns,
        serializer=serializer,
        node_id=_global.local.node_id,
        heartbeat=False,
    )
    try:
        jobs.register(runtime.cluster, job_id, worker_id, ns, grace)
    except redis.ConnectionError as exc:
        runtime.close()
        raise connection_error(settings, exc) from exc
    runtime.start_heartbeat()
    return runtime


def _teardown_local() -> None:
    _global.local.teardown()


def shutdown() -> None:
    """Disconnect; delete this job's tasks and objects; stop what ``init`` started."""
    with _global.lock:
        runtime = session.current_runtime(required=False)
        if runtime is None:
            _teardown_local()
            return
        session.set_runtime(None)
        set_job_defaults(None, None)
        local_mode_.stop()
        if not _global.is_driver:
            return
        try:
            printer, _global.log_printer = _global.log_printer, None
            if printer is not None:
                printer.stop()  # what tasks printed is shown before the job goes
            try:
                runtime.stop_flusher()  # no heartbeat may recreate keys after cleanup
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
            if _global.local.server is None:
                # a shared cluster: delete what this job left (a private server
                # is about to disappear with everything in it)
                try:
                    runtime.cleanup_job(runtime.job_id)
                except redis.RedisError:
                    pass
        finally:
            try:
                runtime.close()
            except Exception:  # noqa: BLE001
                pass
            _teardown_local()
            _global.is_driver = False


atexit.register(shutdown)


def _auto_init() -> None:
    init()


session.register_auto_init(_auto_init)


# -- remote ------------------------------------------------------------------------------
def remote(*args: Any, **kwargs: Any) -> Any:
    """Make a function a remote function: ``@remote`` or ``@remote(num_cpus=2)``."""
    if len(args) == 1 and not kwargs and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(
            "The @remote decorator takes either a function or keyword options, e.g. "
            "@redray.remote(num_cpus=2)."
        )

    def decorator(fn: Any) -> Any:
        return _make_remote(fn, kwargs)

    return decorator


def _make_remote(target: Any, options: dict[str, Any]) -> Any:
    if isinstance(target, type):
        from .actor import ActorClass

        return ActorClass(target, options)
    if not callable(target):
        raise TypeError(f"@remote needs a function or a class, got {target!r}.")
    return RemoteFunction(target, options)


def method(
    *, num_returns: int | None = None, **options: Any
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Annotate an actor method with options, e.g. ``@redray.method(num_returns=2)``."""
    if num_returns is not None:
        options["num_returns"] = num_returns

    def decorator(fn: Callable[..., R]) -> Callable[..., R]:
        fn.__redray_method_options__ = dict(options)  # type: ignore[attr-defined]
        return fn

    return decorator


# -- objects -----------------------------------------------------------------------------
def put(value: Any, *, _owner: Any = None) -> ObjectRef[Any]:
    """Store a value in the cluster; returns its ObjectRef."""
    return current_runtime(auto_init=True).put(value)


def _check_refs(refs: Any, what: str) -> None:
    if not isinstance(refs, ObjectRef):
        raise TypeError(f"{what} expects ObjectRefs, got {type(refs).__name__}: {refs!r}")


@overload
def get(object_refs: ObjectRef[R], *, timeout: float | None = None) -> R: ...


@overload
def get(object_refs: Sequence[ObjectRef[Any]], *, timeout: float | None = None) -> list[Any]: ...


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """The value(s) of ObjectRef(s), waiting up to ``timeout`` seconds.

    Raises ``GetTimeoutError`` when time runs out and the task's own error
    (as a ``RayTaskError`` subclass of the original class) when it failed.
    """
    runtime = current_runtime()
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    if isinstance(object_refs, ObjectRef):
        return runtime.get_values([object_refs._id], timeout)[0]
    if not isinstance(object_refs, list):
        raise ValueError(
            f"'object_refs' must either be an ObjectRef or a list of ObjectRefs, "
            f"got {type(object_refs).__name__}."
        )
    for ref in object_refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(
                f"Attempting to call `get` on the value {ref!r}, which is not an ObjectRef."
            )
    if not object_refs:
        return []
    return runtime.get_values([r._id for r in object_refs], timeout)


def wait(
    object_refs: list[ObjectRef[Any]],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef[Any]], list[ObjectRef[Any]]]:
    """Split refs into (ready, not ready) once ``num_returns`` are ready or time is up."""
    runtime = current_runtime()
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(object_refs).__name__}")
    for ref in object_refs:
        if not isinstance(ref, (ObjectRef, ObjectRefGenerator)):
            raise TypeError(f"wait() expected a list of ObjectRef, got an element {ref!r}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"Invalid timeout {timeout}: it must be None or >= 0.")
    if not object_refs:
        return [], []
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns!r}: it must be >= 1.")
    if num_returns > len(object_refs):
        raise ValueError("num_returns cannot be greater than the number of objects provided.")
    if len({id(r) if isinstance(r, ObjectRefGenerator) else r._id for r in object_refs}) != len(
        object_refs
    ):
        raise ValueError("Wait requires a list of unique object refs.")
    if not object_refs:
        return [], []
    if any(isinstance(r, ObjectRefGenerator) for r in object_refs):
        return _wait_with_generators(runtime, object_refs, num_returns, timeout)
    ready_idx, rest_idx = runtime.wait([r._id for r in object_refs], num_returns, timeout)
    return [object_refs[i] for i in ready_idx], [object_refs[i] for i in rest_idx]


def _wait_with_generators(
    runtime: Runtime, items: list[Any], num_returns: int, timeout: float | None
) -> tuple[list[Any], list[Any]]:
    """wait() where a generator counts as ready when its next item (or its end) is."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready = [
            x
            for x in items
            if (
                x.next_ready()
                if isinstance(x, ObjectRefGenerator)
                else runtime.refs.is_ready(x._id)
            )
        ]
        left = None if deadline is None else deadline - time.monotonic()
        if len(ready) >= num_returns or (left is not None and left <= 0):
            chosen = ready[:num_returns]
            return chosen, [x for x in items if not any(x is c for c in chosen)]
        watch: list[str] = []
        for x in items:
            if isinstance(x, ObjectRefGenerator):
                watch += [x._item(x._next), x._end._id]
                runtime.refs.own([x._item(x._next)])
            else:
                watch.append(x._id)
        runtime.wait_ready(list(dict.fromkeys(watch)), 1, left)


def cancel(
    object_ref: ObjectRef[Any] | ObjectRefGenerator,
    *,
    force: bool = False,
    recursive: bool = True,
) -> None:
    """Cancel the task that produces ``object_ref``; ``get`` then raises TaskCancelledError.

    A task that has not started is removed and never runs. A running task gets
    KeyboardInterrupt (``force=True`` kills its executor instead, and ``get``
    raises WorkerCrashedError); with ``recursive`` the tasks it submitted are
    cancelled too. Cancelled tasks are not retried; cancelling a finished task
    does nothing. A pending actor call is dropped, a running async one is
    cancelled through asyncio; ``force=True`` on an actor call is ValueError.
    An ``ObjectRefGenerator`` cancels its generator task: the refs it
    yielded keep their values, and the next ``next()`` raises
    TaskCancelledError.
    """
    if isinstance(object_ref, ObjectRefGenerator):
        # every object id of a task names it: the generator's end marker does
        object_ref = object_ref._end
    _check_refs(object_ref, "cancel()")
    current_runtime().cancel(object_ref._id, force=force, recursive=recursive)


# -- cluster state -------------------------------------------------------------------------
def _nodes_raw(runtime: Runtime) -> list[dict[str, Any]]:
    infos = [node_info(raw) for raw in runtime.client.hvals(runtime.keys.nodes)]
    return [info for info in infos if info is not None]


def _units_to_resources(totals: dict[str, Any]) -> dict[str, float]:
    return {k: from_units(int(v)) for k, v in totals.items()}


def cluster_resources() -> dict[str, float]:
    """Total resources of all live nodes."""
    runtime = current_runtime()
    local = local_mode_.active()
    if local is not None and local.totals is not None:
        return dict(local.totals)
    total: dict[str, int] = {}
    for info in _nodes_raw(runtime):
        for k, v in info.get("totals", {}).items():
            total[k] = total.get(k, 0) + int(v)
    return _units_to_resources(total)


def available_resources() -> dict[str, float]:
    """Resources free right now, summed over live nodes (zeros left out)."""
    runtime = current_runtime()
    local = local_mode_.active()
    if local is not None and local.totals is not None:
        # nothing is reserved while a task runs in the driver (as Ray 2.40)
        return dict(local.totals)
    nodes = _nodes_raw(runtime)
    with runtime.client.pipeline(transaction=False) as pipe:
        for info in nodes:
            pipe.hgetall(runtime.keys.node_avail(info["node_id"]))
        replies = pipe.execute()
    total: dict[str, int] = {}
    for reply in replies:
        for k, v in reply.items():
            name = k.decode(errors="replace")
            total[name] = total.get(name, 0) + units_of(v)
    return {k: v for k, v in _units_to_resources(total).items() if v > 0}


def nodes() -> list[dict[str, Any]]:
    """One dict per node, with Ray's field names."""
    runtime = current_runtime()
    local = local_mode_.active()
    if local is not None and local.totals is not None:
        return local.nodes()
    pairs: list[tuple[bytes, float]] = runtime.client.zrange(  # type: ignore[assignment]
        runtime.keys.heartbeats, 0, -1, withscores=True
    )
    beats = dict(pairs)
    out = []
    for info in _nodes_raw(runtime):
        nid = info["node_id"]
        out.append(
            {
                "NodeID": nid,
                "Alive": True,
                "NodeManagerAddress": info.get("ip", ""),
                "NodeManagerHostname": info.get("hostname", ""),
                "NodeName": info.get("ip", ""),
                "Resources": _units_to_resources(info.get("totals", {})),
                "GPUIds": info.get("gpu_ids", []),
                "Pid": info.get("pid"),
                "LastHeartbeat": (beats[nid.encode()] / 1000) if nid.encode() in beats else None,
            }
        )
    return out


def get_runtime_context() -> RuntimeContext:
    """Ids of the current job, task, node and worker, and the task's resources.
    Starts a local cluster first when none is connected, as Ray does."""
    return RuntimeContext(session.current_runtime(required=True, auto_init=True))


def get_gpu_ids() -> list[int] | list[str]:
    """The GPU ids reserved for the current task (empty in a driver)."""
    ids_ = get_runtime_context().get_accelerator_ids()["GPU"]
    try:
        return [int(i) for i in ids_]
    except ValueError:
        return list(ids_)
