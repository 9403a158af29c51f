"""``get_runtime_context()``: who and where the calling code runs; and
``ClusterContext``, what ``init()`` returns."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .id_types import ActorID, JobID, NodeID, PlacementGroupID, TaskID

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass
class TaskContext:
    """What an executor knows about the task it is running."""

    task_id: str
    job_id: str
    node_id: str
    worker_id: str
    resources: dict[str, float] = field(default_factory=dict)
    gpu_ids: list[str] = field(default_factory=list)
    function_name: str = ""
    #: the ``name`` option it was given, if any
    name: str = ""


@dataclass
class ActorContext:
    """What an actor process knows about itself."""

    actor_id: str
    name: str
    namespace: str
    class_name: str
    #: what the actor holds for its life (each call runs with it)
    resources: dict[str, float] = field(default_factory=dict)
    gpu_ids: list[str] = field(default_factory=list)


class RayDeprecationWarning(DeprecationWarning):
    """Ray's warning for a deprecated API (``ray.util.annotations.RayDeprecationWarning``)."""


def _deprecated(use: str) -> None:
    # stacklevel 3: the line in the user's code that read the property, so
    # Python's default filter shows it where Ray's would be shown
    warnings.warn(
        "This API is deprecated and may be removed in future releases. You could "
        'suppress this warning by setting env variable PYTHONWARNINGS="ignore::'
        f'DeprecationWarning"\n{use}',
        RayDeprecationWarning,
        stacklevel=3,
    )


def _worker_only() -> AssertionError:
    # Ray asserts that the caller is a worker (a task or an actor), not a driver
    return AssertionError("This method is only available when the process is a worker.")


class RuntimeContext:
    """Ray's ``RuntimeContext``: the ids of the current job, task, actor, node
    and worker, and what the current task holds.

    The ``get_*_id()`` methods return ids as hex strings (None for a task or
    actor id where there is none); the deprecated properties ``job_id``,
    ``task_id``, ``node_id`` and ``actor_id`` return id objects (``JobID``,
    ...), with a ``RayDeprecationWarning``, as Ray's do.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def _task(self) -> TaskContext | None:
        task: TaskContext | None = getattr(self._runtime, "current_task", None)
        return task

    @property
    def _actor(self) -> ActorContext | None:
        actor: ActorContext | None = getattr(self._runtime, "current_actor", None)
        return actor

    def _in_worker(self) -> bool:
        # a driver runs no task and hosts no actor
        return self._task is not None or self._actor is not None

    def get_job_id(self) -> str:
        """The current job's id, in hex; in a task, the id of the job that submitted it."""
        return self._runtime.job_id

    @property
    def job_id(self) -> JobID:
        """Deprecated: ``get_job_id()``. The current job's id as a ``JobID``."""
        _deprecated("Use get_job_id() instead")
        return JobID.from_hex(self.get_job_id())

    def get_task_id(self) -> str | None:
        """The current task's id in hex; None in a driver."""
        task = self._task
        return task.task_id if task else None

    @property
    def task_id(self) -> TaskID | None:
        """Deprecated: ``get_task_id()``. The current task's id as a ``TaskID``
        (None where none runs); AssertionError in a driver."""
        _deprecated("Use get_task_id() instead")
        if not self._in_worker():
            raise _worker_only()
        task_id = self.get_task_id()
        return TaskID.from_hex(task_id) if task_id else None

    def get_task_name(self) -> str | None:
        """The current task's name: its ``name`` option, else the function's
        name (``f``), or ``Class.method`` for an actor call; None in a driver."""
        task = self._task
        if task is None:
            return None
        if task.name:
            return task.name
        parts = task.function_name.split(".")
        # an actor call's function_name is already "Class.method"
        return ".".join(parts[-2:]) if self._actor is not None else parts[-1]

    def get_task_function_name(self) -> str | None:
        """The current task's function with its module (``module.f``,
        ``Class.method`` for an actor call); None in a driver."""
        task = self._task
        return task.function_name if task else None

    def get_node_id(self) -> str:
        """The id, in hex, of the node this process runs on."""
        return self._runtime.node_id or ""

    @property
    def node_id(self) -> NodeID:
        """Deprecated: ``get_node_id()``. The node's id as a ``NodeID`` (nil
        for a driver that runs on no node of the cluster)."""
        _deprecated("Use get_node_id() instead")
        node_id = self.get_node_id()
        return NodeID.from_hex(node_id) if node_id else NodeID.nil()

    def get_worker_id(self) -> str:
        """The id of this worker or driver process."""
        return self._runtime.worker_id

    def get_actor_id(self) -> str | None:
        """The current actor's id in hex; None outside an actor."""
        actor = self._actor
        return actor.actor_id if actor else None

    @property
    def actor_id(self) -> ActorID | None:
        """Deprecated: ``get_actor_id()``. The current actor's id as an
        ``ActorID`` (None in a task); AssertionError in a driver."""
        _deprecated("Use get_actor_id() instead")
        if not self._in_worker():
            raise _worker_only()
        actor_id = self.get_actor_id()
        return ActorID.from_hex(actor_id) if actor_id else None

    def get_actor_name(self) -> str | None:
        """The current actor's name: "" for an actor without one, None outside an actor."""
        actor = self._actor
        return actor.name if actor else None

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in."""
        actor = self._actor
        if actor is None:
            raise RuntimeError("This method is only available in an actor.")
        from .actor import handle_of

        return handle_of(self._runtime, actor.actor_id)

    def get_placement_group_id(self) -> str | None:
        """The current placement group's id in hex: None (redray has no placement groups)."""
        return None

    @property
    def current_placement_group_id(self) -> PlacementGroupID:
        """Deprecated: ``get_placement_group_id()``. Always the nil ``PlacementGroupID``."""
        _deprecated("Use get_placement_group_id() instead")
        return PlacementGroupID.nil()

    @property
    def namespace(self) -> str:
        actor = self._actor
        return actor.namespace if actor else self._runtime.namespace

    def get_namespace(self) -> str:
        return self.namespace

    def get_assigned_resources(self) -> dict[str, float]:
        # concurrent actor calls share the process: the actor's holdings stand for them
        held = self._task or self._actor
        return dict(held.resources) if held else {}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        held = self._task or self._actor
        return {"GPU": list(held.gpu_ids) if held else []}

    def is_canceled(self) -> bool:
        """Whether ``cancel`` was called on the task running here."""
        return bool(getattr(self._runtime, "cancel_requested", False))

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return False

    @property
    def gcs_address(self) -> str:
        """The cluster's address, without its password (shown, printed, logged)."""
        return self._runtime.settings.display

    def get(self) -> dict[str, Any]:
        """Deprecated: the ``get_*_id()`` methods. The job and node ids (as id
        objects) and the namespace; in a worker also the task id and, in an
        actor, the actor id."""
        _deprecated("Use get_xxx_id() methods to get relevant ids instead")
        node_id = self.get_node_id()
        context: dict[str, Any] = {
            "job_id": JobID.from_hex(self.get_job_id()),
            "node_id": NodeID.from_hex(node_id) if node_id else NodeID.nil(),
            "namespace": self.namespace,
        }
        task_id, actor_id = self.get_task_id(), self.get_actor_id()
        if task_id:
            context["task_id"] = TaskID.from_hex(task_id)
        if actor_id:
            context["actor_id"] = ActorID.from_hex(actor_id)
        return context


class ClusterContext:
    """What ``init()`` returns, as Ray's ``RayContext``: ``address_info``
    (also by key: ``init()["address"]``), ``dashboard_url``, the versions,
    and a context manager that calls ``shutdown()`` on exit.

    Addresses here carry no password: another process on this machine joins
    with ``init(address="auto")`` (a cluster ``redray start`` started) or the
    full address from ``REDRAY_ADDRESS``.
    """

    def __init__(
        self, runtime: Runtime, shutdown: Callable[[], None], session_dir: str = ""
    ) -> None:
        import platform

        from . import __version__

        settings = runtime.settings
        self._shutdown = shutdown
        self.dashboard_url = ""
        self.python_version = platform.python_version()
        self.ray_version = __version__
        self.ray_commit = ""
        self.address_info: dict[str, Any] = {
            "address": settings.display,
            "gcs_address": settings.display,
            "redis_address": settings.display,
            "node_ip_address": settings.host,
            "raylet_ip_address": settings.host,
            "node_id": runtime.node_id or "",
            "session_dir": session_dir,
            "webui_url": self.dashboard_url,
        }

    def set_dashboard_url(self, url: str) -> None:
        """The cluster's dashboard (``host:port``, as Ray gives it)."""
        self.dashboard_url = url
        self.address_info["webui_url"] = url

    def __getitem__(self, key: str) -> Any:
        return self.address_info[key]

    def __contains__(self, key: object) -> bool:
        return key in self.address_info

    def get(self, key: str, default: Any = None) -> Any:
        return self.address_info.get(key, default)

    def __enter__(self) -> ClusterContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def disconnect(self) -> None:
        """Disconnect from the cluster (``shutdown()``)."""
        self._shutdown()

    def __repr__(self) -> str:
        return f"ClusterContext(address={self.address_info['address']!r})"
