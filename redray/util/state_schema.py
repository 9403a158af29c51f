"""The state API's records, with Ray 2.x's names (``ray.util.state.common``).

Each is a dataclass that also answers dict access (``task["state"]``), as
Ray's do. Field metadata says which fields a filter may name
(``filterable``) and which the CLI prints only with ``--detail``
(``detail``); the API fills every field it knows either way, and leaves
those it cannot know ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

#: Ray's default ``limit`` of a listing.
DEFAULT_LIMIT = 100

#: Filter predicates Ray accepts.
PREDICATES = ("=", "!=")


def text(value: Any) -> str:
    """A Redis reply (bytes) or a value as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def column(*, filterable: bool = False, detail: bool = False, default: Any = None) -> Any:
    meta = {"filterable": filterable, "detail": detail}
    if isinstance(default, (dict, list)):
        kind = type(default)
        return field(default_factory=kind, metadata=meta)
    return field(default=default, metadata=meta)


class StateRecord:
    """Dict access on a state dataclass (Ray keeps it for compatibility)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self.columns():
            raise KeyError(key)
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.columns()

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self.columns() else default

    def keys(self) -> list[str]:
        return self.list_columns()

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def list_columns(cls, detail: bool = True) -> list[str]:
        return [
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if detail or not f.metadata.get("detail", False)
        ]

    @classmethod
    def columns(cls) -> set[str]:
        return set(cls.list_columns())

    @classmethod
    def filterable_columns(cls) -> set[str]:
        return {
            f.name
            for f in dataclasses.fields(cls)  # type: ignore[arg-type]
            if f.metadata.get("filterable", False)
        }


@dataclass
class TaskState(StateRecord):
    task_id: str = column(filterable=True, default="")
    attempt_number: int = column(filterable=True, default=0)
    name: str = column(filterable=True, default="")
    state: str = column(filterable=True, default="")
    job_id: str = column(filterable=True, default="")
    actor_id: str | None = column(filterable=True)
    type: str = column(filterable=True, default="NORMAL_TASK")
    func_or_class_name: str = column(filterable=True, default="")
    parent_task_id: str | None = column(filterable=True)
    node_id: str | None = column(filterable=True)
    worker_id: str | None = column(filterable=True)
    worker_pid: int | None = column(filterable=True)
    error_type: str | None = column(filterable=True)
    language: str | None = column(filterable=True, detail=True, default="PYTHON")
    required_resources: dict[str, float] | None = column(detail=True)
    runtime_env_info: dict[str, Any] | None = column(detail=True)
    placement_group_id: str | None = column(filterable=True, detail=True)
    events: list[dict[str, Any]] | None = column(detail=True)
    profiling_data: dict[str, Any] | None = column(detail=True)
    creation_time_ms: int | None = column(detail=True)
    start_time_ms: int | None = column(detail=True)
    end_time_ms: int | None = column(detail=True)
    task_log_info: dict[str, Any] | None = column(detail=True)
    error_message: str | None = column(detail=True)
    is_debugger_paused: bool | None = column(filterable=True, detail=True)
    call_site: str | None = column(detail=True)
    label_selector: dict[str, Any] | None = column(detail=True)


@dataclass
class ActorState(StateRecord):
    actor_id: str = column(filterable=True, default="")
    class_name: str = column(filterable=True, default="")
    state: str = column(filterable=True, default="")
    job_id: str = column(filterable=True, default="")
    name: str | None = column(filterable=True)
    node_id: str | None = column(filterable=True)
    pid: int | None = column(filterable=True)
    ray_namespace: str | None = column(filterable=True)
    serialized_runtime_env: str | None = column(detail=True)
    required_resources: dict[str, float] | None = column(detail=True)
    death_cause: dict[str, Any] | None = column(detail=True)
    is_detached: bool | None = column(detail=True)
    placement_group_id: str | None = column(filterable=True, detail=True)
    repr_name: str | None = column(filterable=True, detail=True)
    num_restarts: int = column(detail=True, default=0)
    call_site: str | None = column(detail=True)
    #: redray's name for ray_namespace, kept for existing callers
    namespace: str | None = column(filterable=True, detail=True)


@dataclass
class ObjectState(StateRecord):
    object_id: str = column(filterable=True, default="")
    object_size: int = column(filterable=True, default=0)
    task_status: str = column(filterable=True, default="FINISHED")
    attempt_number: int = column(filterable=True, default=0)
    reference_type: str | None = column(filterable=True)
    call_site: str | None = column(filterable=True)
    type: str | None = column(filterable=True)
    pid: int | None = column(filterable=True)
    ip: str | None = column(filterable=True)
    #: the job whose cleanup deletes it (redray's addition)
    job_id: str | None = column(filterable=True, detail=True)


@dataclass
class NodeState(StateRecord):
    node_id: str = column(filterable=True, default="")
    node_ip: str = column(filterable=True, default="")
    is_head_node: bool | None = column(filterable=True)
    state: str = column(filterable=True, default="ALIVE")
    state_message: str | None = column()
    node_name: str = column(filterable=True, default="")
    resources_total: dict[str, float] = column(default={})
    labels: dict[str, str] = column(default={})
    start_time_ms: int | None = column(detail=True)
    end_time_ms: int | None = column(detail=True)


@dataclass
class JobState(StateRecord):
    job_id: str | None = column(filterable=True)
    submission_id: str | None = column(filterable=True)
    type: str = column(filterable=True, default="DRIVER")
    status: str = column(filterable=True, default="RUNNING")
    entrypoint: str = column(filterable=True, default="")
    message: str | None = column()
    error_type: str | None = column(filterable=True)
    start_time: int | None = column()
    end_time: int | None = column()
    metadata: dict[str, str] | None = column()
    runtime_env: dict[str, Any] | None = column(detail=True)
    driver_info: dict[str, Any] | None = column(detail=True)
    driver_node_id: str | None = column(filterable=True, detail=True)
    driver_exit_code: int | None = column(detail=True)


@dataclass
class WorkerState(StateRecord):
    worker_id: str = column(filterable=True, default="")
    is_alive: bool = column(filterable=True, default=True)
    worker_type: str = column(filterable=True, default="WORKER")
    exit_type: str | None = column(filterable=True)
    node_id: str | None = column(filterable=True)
    ip: str | None = column(filterable=True)
    pid: int | None = column(filterable=True)
    exit_detail: str | None = column(detail=True)
    worker_launch_time_ms: int | None = column(detail=True)
    worker_launched_time_ms: int | None = column(detail=True)
    start_time_ms: int | None = column(detail=True)
    end_time_ms: int | None = column(detail=True)


R = TypeVar("R", bound=StateRecord)
Filter = tuple[str, str, Any]


def _convert(value: Any, current: Any) -> Any:
    """A filter's text value as the type of the field it is compared with."""
    if not isinstance(value, str) or isinstance(current, str) or current is None:
        return value
    if isinstance(current, bool):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(current, int):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _matches(record: StateRecord, key: str, predicate: str, value: Any) -> bool:
    current = getattr(record, key)
    if isinstance(value, str) and isinstance(current, str):
        equal = current.lower() == value.lower()  # Ray: case-insensitive for text
    else:
        equal = current == _convert(value, current)
    return equal if predicate == "=" else not equal


def check_filters(cls: type[StateRecord], filters: Sequence[Filter] | None) -> list[Filter]:
    """The filters, checked as Ray checks them (ValueError for a column or
    predicate it does not support); keys are matched case-insensitively."""
    out: list[Filter] = []
    allowed = cls.filterable_columns()
    for item in filters or ():
        try:
            key, predicate, value = item
        except (TypeError, ValueError):
            raise ValueError(f"a filter is (key, predicate, value), got {item!r}") from None
        key = str(key).lower()
        if key not in allowed:
            raise ValueError(
                f"The given filter column {key} is not supported. Enter filters with "
                f"--filter key=value or --filter key!=value. Supported filter columns: "
                f"{sorted(allowed)}"
            )
        if predicate not in PREDICATES:
            raise ValueError(
                f"Unsupported filter predicate {predicate!r}: use one of {', '.join(PREDICATES)}"
            )
        out.append((key, predicate, value))
    return out


def select(records: Iterable[R], filters: Sequence[Filter], limit: int) -> list[R]:
    """The records every filter matches, at most ``limit`` of them."""
    out: list[R] = []
    for record in records:
        if len(out) >= limit:
            break
        if all(_matches(record, k, p, v) for k, p, v in filters):
            out.append(record)
    return out
