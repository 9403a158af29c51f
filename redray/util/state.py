"""Cluster state, as ``ray.util.state``: listings, look-ups and summaries.

Read from the connected cluster's keys (docs/architecture.md, section 4),
never on a hot path: unfinished tasks from the scheduling hashes
(``task:state``, ``task:spec``, the nodes' ``running`` hashes), ended ones
from the capped task-event stream (``task_events.py``), actors from their
records, objects from the live jobs' key sets. Returns Ray's records
(``state_schema.py``), which also answer dict access.

Task states: ``PENDING_ARGS_AVAIL`` (waiting for inputs),
``PENDING_NODE_ASSIGNMENT`` (ready, queued for a free slot), ``RUNNING``,
``RUNNING_IN_RAY_GET`` (blocked in ``get``, its CPU given back),
``FINISHED``, ``FAILED`` (a task cancelled before it ran: ``FAILED`` with
``error_type`` ``TASK_CANCELLED``). An actor's creation task is
``FINISHED`` once the actor is alive. Actor method calls (``ACTOR_TASK``)
are read from their actors' mailboxes while they wait
(``SUBMITTED_TO_WORKER``) or run (``state_calls.py``), from the event
stream once they end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from .. import session, task_events
from .. import task_spec as ts
from ..constants import RESOURCE_UNIT
from ..ids import TASK_ID_LEN, task_of
from ..resources import from_units, node_info
from ..runtime import Runtime
from .state_calls import live_actor_calls
from .state_schema import (
    DEFAULT_LIMIT,
    ActorState,
    Filter,
    JobState,
    NodeState,
    ObjectState,
    R,
    TaskState,
    WorkerState,
    check_filters,
    select,
)
from .state_schema import text as _text

__all__ = [
    "ActorState",
    "JobState",
    "NodeState",
    "ObjectState",
    "TaskState",
    "WorkerState",
    "get_actor",
    "get_task",
    "list_actors",
    "list_jobs",
    "list_nodes",
    "list_objects",
    "list_tasks",
    "list_workers",
    "summarize_actors",
    "summarize_objects",
    "summarize_tasks",
]

NORMAL_TASK = "NORMAL_TASK"
ACTOR_TASK = "ACTOR_TASK"
ACTOR_CREATION_TASK = "ACTOR_CREATION_TASK"


def _runtime() -> Runtime:
    return session.current_runtime()


def _lister(cls: type[R], source: Callable[[Runtime], list[R]], doc: str) -> Callable[..., list[R]]:
    """A ``list_*`` function with Ray's parameters (``address``, ``timeout``,
    ``detail``, ``raise_on_missing_output``: accepted; the connected cluster
    is read and every field filled)."""

    def listing(
        address: str | None = None,
        filters: Sequence[Filter] | None = None,
        limit: int = DEFAULT_LIMIT,
        timeout: int = 30,
        detail: bool = False,
        raise_on_missing_output: bool = True,
        _explain: bool = False,
    ) -> list[R]:
        return select(source(_runtime()), check_filters(cls, filters), limit)

    listing.__doc__ = doc
    return listing


def _summarizer(
    source: Callable[[Runtime], dict[str, Any]], doc: str
) -> Callable[..., dict[str, Any]]:
    """A ``summarize_*`` function with Ray's parameters (accepted, unused)."""

    def summarize(
        address: str | None = None,
        timeout: int = 30,
        raise_on_missing_output: bool = True,
        _explain: bool = False,
    ) -> dict[str, Any]:
        return source(_runtime())

    summarize.__doc__ = doc
    return summarize


# -- tasks ---------------------------------------------------------------------------------
def _resources(reservation: str) -> dict[str, float]:
    return task_events.shape_resources(reservation, RESOURCE_UNIT)


def _live_tasks(rt: Runtime) -> list[TaskState]:
    """Unfinished tasks, from the scheduling state."""
    client, keys = rt.client, rt.keys
    states: dict[bytes, bytes] = client.hgetall(keys.task_state)  # type: ignore[assignment]
    if not states:
        return []
    node_ids = [_text(n) for n in client.hkeys(keys.nodes)]
    pipe = client.pipeline(transaction=False)
    pipe.hmget(keys.task_spec, list(states))
    for node in node_ids:
        pipe.hgetall(keys.node_running(node))
    specs, *running_by_node = pipe.execute()
    running: dict[str, list[str]] = {}
    for held in running_by_node:
        for tid, record in held.items():
            running[_text(tid)] = _text(record).split(" ")
    creations = _creation_tasks(rt)
    out = []
    for (raw_tid, raw_state), raw_spec in zip(states.items(), specs):
        tid, state = _text(raw_tid), _text(raw_state)
        task = TaskState(task_id=tid)
        if raw_spec is not None:
            try:
                _describe(task, ts.open_spec(rt.signer, bytes(raw_spec), task_id=tid))
            except ValueError:
                pass
        actor = creations.get(tid)
        if actor is not None:
            task.type, task.actor_id = ACTOR_CREATION_TASK, actor[0]
        kind, rest = state[:1], state[1:]
        if kind in ("W", "w"):
            task.state = "PENDING_ARGS_AVAIL"
            task.required_resources = _resources(rest)
        elif kind == "Q":
            task.state = "PENDING_NODE_ASSIGNMENT"
            task.required_resources = _resources(rest.split("|")[0])
        elif kind == "R":
            node, _, worker = rest.partition(" ")
            task.node_id, task.worker_id = node, worker.split(" ")[0]
            record = running.get(tid)
            task.state = "RUNNING"
            if record and len(record) >= 3:
                task.required_resources = _resources(record[1])
                if record[2].isdigit() and int(record[2]) > 0:
                    task.state = "RUNNING_IN_RAY_GET"
            if actor is not None and actor[1] == "ALIVE":
                task.state = "FINISHED"
                task.worker_pid = actor[2]
        elif kind == "C":
            task.state, task.error_type = "FAILED", "TASK_CANCELLED"
        else:
            continue
        out.append(task)
    return out


def _creation_tasks(rt: Runtime) -> dict[str, tuple[str, str, int | None]]:
    """Creation task id -> (actor id, actor state, pid) of the actors not dead yet."""
    out = {}
    for actor in _actor_records(rt):
        task = actor["_task"]
        if task:
            out[task] = (actor["actor_id"], actor["state"], actor["pid"])
    return out


def _describe(task: TaskState, spec: ts.TaskSpec) -> None:
    extra = spec.extra or {}
    short = task_events.short_name(spec.function_name)
    task.job_id = spec.job_id
    task.func_or_class_name = short
    task.name = str(extra.get("name") or short)
    if extra.get("actor"):
        task.type = ACTOR_TASK if extra.get("method") else ACTOR_CREATION_TASK
        task.actor_id = str(extra["actor"]) if isinstance(extra["actor"], str) else None
    env = extra.get("runtime_env")
    task.runtime_env_info = {"serialized_runtime_env": json.dumps(env or {})}


def _ended_tasks(rt: Runtime) -> list[TaskState]:
    """Tasks that ended, from the task-event stream, newest first."""
    out = []
    for ev in task_events.read(rt.client, rt.keys):
        pid = ev.get("p", "")
        out.append(
            TaskState(
                task_id=ev.get("t", ""),
                name=ev.get("n", ""),
                state=ev.get("s", ""),
                job_id=ev.get("j", ""),
                actor_id=ev.get("a") or None,
                type=ev.get("y") or NORMAL_TASK,
                func_or_class_name=ev.get("f", ""),
                node_id=ev.get("nd") or None,
                worker_id=ev.get("w") or None,
                worker_pid=int(pid) if pid.isdigit() else None,
                error_type=ev.get("e") or None,
                error_message=ev.get("m") or None,
                required_resources=_resources(ev.get("r", "")),
                start_time_ms=_int(ev.get("st")),
                end_time_ms=_int(ev.get("et")),
            )
        )
    return out


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _all_tasks(rt: Runtime) -> list[TaskState]:
    ended = _ended_tasks(rt)
    done = {t.task_id for t in ended}
    live = _live_tasks(rt) + live_actor_calls(rt, _actor_records(rt))
    return [t for t in live if t.task_id not in done] + ended


def get_task(
    id: Any,
    address: str | None = None,
    timeout: int = 30,
    _explain: bool = False,
) -> TaskState | None:
    """One task by its id (or an ObjectRef it returns), or None."""
    tid = id.hex() if hasattr(id, "hex") and not isinstance(id, str) else str(id)
    if len(tid) > TASK_ID_LEN:
        tid = task_of(tid)
    for task in _all_tasks(_runtime()):
        if task.task_id == tid:
            return task
    return None


def _task_summary(rt: Runtime) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    totals = {NORMAL_TASK: 0, ACTOR_TASK: 0, ACTOR_CREATION_TASK: 0}
    for task in _all_tasks(rt):
        entry = summary.setdefault(
            task.func_or_class_name,
            {"func_or_class_name": task.func_or_class_name, "type": task.type, "state_counts": {}},
        )
        counts = entry["state_counts"]
        counts[task.state] = counts.get(task.state, 0) + 1
        totals[task.type] = totals.get(task.type, 0) + 1
    return {
        "cluster": {
            "summary": summary,
            "total_tasks": totals[NORMAL_TASK],
            "total_actor_tasks": totals[ACTOR_TASK],
            "total_actor_scheduled": totals[ACTOR_CREATION_TASK],
            "summary_by": "func_name",
        }
    }


# -- actors --------------------------------------------------------------------------------
def _actor_records(rt: Runtime) -> list[dict[str, Any]]:
    members: Any = rt.client.smembers(rt.keys.actors)
    actor_ids = sorted(_text(m) for m in members)
    pipe = rt.client.pipeline(transaction=False)
    for actor_id in actor_ids:
        pipe.hgetall(rt.keys.actor(actor_id))
    out = []
    for actor_id, raw in zip(actor_ids, pipe.execute()):
        info = {_text(k): _text(v) for k, v in raw.items() if k != b"death"}
        if not info:
            continue
        out.append(
            {
                "actor_id": actor_id,
                "class_name": info.get("class_name", ""),
                "name": info.get("name", ""),
                "state": info.get("state", ""),
                "node_id": info.get("node", ""),
                "pid": int(info["pid"]) if info.get("pid", "").isdigit() else None,
                "job_id": info.get("job", ""),
                "is_detached": info.get("detached") == "1",
                "namespace": info.get("namespace", ""),
                "ray_namespace": info.get("namespace", ""),
                "required_resources": _resources(info.get("shape", "")),
                "num_restarts": _int(info.get("restarts")) or 0,
                "repr_name": "",
                "_task": info.get("task", ""),
                "_worker": info.get("worker", ""),
            }
        )
    return out


def _actors(rt: Runtime) -> list[ActorState]:
    out = []
    for record in _actor_records(rt):
        out.append(ActorState(**{k: v for k, v in record.items() if not k.startswith("_")}))
    return out


def get_actor(
    id: str, address: str | None = None, timeout: int = 30, _explain: bool = False
) -> ActorState | None:
    """One actor that is not dead yet, or None."""
    for actor in _actors(_runtime()):
        if actor.actor_id == id:
            return actor
    return None


def _actor_summary(rt: Runtime) -> dict[str, Any]:
    summary: dict[str, dict[str, Any]] = {}
    actors = _actors(rt)
    for actor in actors:
        entry = summary.setdefault(
            actor.class_name, {"class_name": actor.class_name, "state_counts": {}}
        )
        entry["state_counts"][actor.state] = entry["state_counts"].get(actor.state, 0) + 1
    return {"cluster": {"summary": summary, "total_actors": len(actors), "summary_by": "class"}}


# -- objects -------------------------------------------------------------------------------
def _objects(rt: Runtime) -> list[ObjectState]:
    """The objects the live jobs own (their key sets name them)."""
    client, keys = rt.client, rt.keys
    job_ids = sorted(_text(j) for j in client.hkeys(keys.jobs))
    pipe = client.pipeline(transaction=False)
    for job in job_ids:
        pipe.smembers(keys.job_keys(job))
    prefix = keys.obj("")
    found: list[tuple[str, str, str]] = []
    for job, members in zip(job_ids, pipe.execute()):
        for raw in members:
            key = _text(raw)
            oid = key[len(prefix) :]
            if key.startswith(prefix) and ":" not in oid:
                found.append((job, oid, key))
    found.sort()
    pipe = client.pipeline(transaction=False)
    for _job, _oid, key in found:
        pipe.hkeys(key)
    fields = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for (_job, _oid, key), names in zip(found, fields):
        for name in names:
            pipe.hstrlen(key, name)
    sizes = iter(pipe.execute())
    out = []
    for (job, oid, _key), names in zip(found, fields):
        if not names:
            continue  # deleted since
        out.append(
            ObjectState(
                object_id=oid,
                object_size=sum(int(next(sizes)) for _ in names),
                task_status="FINISHED",
                job_id=job,
            )
        )
    return out


def _object_summary(rt: Runtime) -> dict[str, Any]:
    objects = _objects(rt)
    size_mb = sum(o.object_size for o in objects) / (1024 * 1024)
    group = {
        "total_objects": len(objects),
        "total_size_mb": size_mb,
        "total_num_workers": 0,
        "total_num_nodes": 0,
        "task_state_counts": {"FINISHED": len(objects)} if objects else {},
        "task_attempt_number_counts": {"1": len(objects)} if objects else {},
        "ref_type_counts": {},
    }
    return {
        "cluster": {
            "summary": {"disabled": group} if objects else {},
            "total_objects": len(objects),
            "total_size_mb": size_mb,
            "callsite_enabled": False,
            "summary_by": "callsite",
        }
    }


# -- nodes, jobs, workers ------------------------------------------------------------------
def _nodes(rt: Runtime) -> list[dict[str, Any]]:
    infos = [node_info(raw) for raw in rt.client.hvals(rt.keys.nodes)]
    return sorted((i for i in infos if i is not None), key=lambda i: str(i["node_id"]))


def _node_states(rt: Runtime) -> list[NodeState]:
    return [
        NodeState(
            node_id=info["node_id"],
            node_ip=str(info.get("ip", "")),
            state="ALIVE",
            node_name=str(info.get("ip", "")),
            resources_total={k: from_units(int(v)) for k, v in (info.get("totals") or {}).items()},
            start_time_ms=int(info["started"] * 1000)
            if isinstance(info.get("started"), (int, float))
            else None,
        )
        for info in _nodes(rt)
    ]


def _jobs(rt: Runtime) -> list[dict[str, Any]]:
    raw: dict[bytes, bytes] = rt.client.hgetall(rt.keys.jobs)  # type: ignore[assignment]
    out = []
    for job_id, value in sorted(raw.items()):
        try:
            info = json.loads(value)
        except ValueError:
            continue
        if isinstance(info, dict):
            out.append({**info, "job_id": _text(job_id)})
    return out


def _job_states(rt: Runtime) -> list[JobState]:
    jobs = []
    for info in _jobs(rt):
        started = info.get("started")
        jobs.append(
            JobState(
                job_id=info["job_id"],
                type="DRIVER",
                status="RUNNING",
                entrypoint=str(info.get("entrypoint", "")),
                start_time=int(started * 1000) if isinstance(started, (int, float)) else None,
                driver_info={
                    "id": info.get("worker_id"),
                    "node_ip_address": info.get("driver_host"),
                    "pid": str(info.get("driver_pid", "")),
                },
            )
        )
    return jobs


def _worker_states(rt: Runtime) -> list[WorkerState]:
    nodes = _nodes(rt)
    pipe = rt.client.pipeline(transaction=False)
    for info in nodes:
        pipe.smembers(rt.keys.node_workers(info["node_id"]))
    # an actor's process is the one executor whose pid its record keeps
    pids = {a["_worker"]: a["pid"] for a in _actor_records(rt) if a["_worker"]}
    workers = []
    for info, members in zip(nodes, pipe.execute()):
        for worker in sorted(_text(m) for m in members):
            workers.append(
                WorkerState(
                    worker_id=worker,
                    worker_type="WORKER",
                    node_id=info["node_id"],
                    ip=str(info.get("ip", "")),
                    pid=pids.get(worker),
                )
            )
    for job in _jobs(rt):
        pid = job.get("driver_pid")
        workers.append(
            WorkerState(
                worker_id=str(job.get("worker_id", "")),
                worker_type="DRIVER",
                ip=str(job.get("driver_host", "")),
                pid=pid if isinstance(pid, int) else None,
            )
        )
    return workers


# -- the API -------------------------------------------------------------------------------
list_tasks = _lister(
    TaskState, _all_tasks, "Unfinished tasks, then those that ended (newest first)."
)
list_actors = _lister(ActorState, _actors, "Actors that are not dead yet, with where they live.")
list_objects = _lister(ObjectState, _objects, "The objects stored in the cluster (live jobs').")
list_nodes = _lister(NodeState, _node_states, "The live nodes.")
list_jobs = _lister(
    JobState, _job_states, "The jobs whose driver is connected (a job's record goes when it ends)."
)
list_workers = _lister(
    WorkerState, _worker_states, "The live executors of every node, then the connected drivers."
)
summarize_tasks = _summarizer(_task_summary, "Task counts per function and state, in Ray's shape.")
summarize_actors = _summarizer(_actor_summary, "Actor counts per class and state, in Ray's shape.")
summarize_objects = _summarizer(
    _object_summary, "Object counts and sizes, in Ray's shape (no call sites: one group)."
)
