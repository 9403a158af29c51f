"""``get_runtime_context()``: who and where the calling code runs; and
``ClusterContext``, what ``init()`` returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


class RuntimeContext:
    """Ray's ``RuntimeContext``: ids of the current job, task, node and worker."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    @property
    def _task(self) -> TaskContext | None:
        task: TaskContext | None = getattr(self._runtime, "current_task", None)
        return task

    def get_job_id(self) -> str:
        return self._runtime.job_id

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get_task_id(self) -> str | None:
        task = self._task
        return task.task_id if task else None

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    def get_task_name(self) -> str | None:
        task = self._task
        return task.function_name if task else None

    def get_node_id(self) -> str:
        return self._runtime.node_id or ""

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    def get_worker_id(self) -> str:
        return self._runtime.worker_id

    @property
    def _actor(self) -> ActorContext | None:
        actor: ActorContext | None = getattr(self._runtime, "current_actor", None)
        return actor

    def get_actor_id(self) -> str | None:
        actor = self._actor
        return actor.actor_id if actor else None

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    def get_actor_name(self) -> str | None:
        actor = self._actor
        return (actor.name or None) if actor else None

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this code runs in."""
        actor = self._actor
        if actor is None:
            raise RuntimeError("This code is not running inside an actor.")
        from .actor import handle_of

        return handle_of(self._runtime, actor.actor_id)

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
        return {
            "job_id": self.get_job_id(),
            "node_id": self.get_node_id(),
            "task_id": self.get_task_id(),
        }


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
