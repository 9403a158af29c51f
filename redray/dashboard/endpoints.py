"""The dashboard's JSON endpoints: one function per panel, each reading the
state API (``redray.util.state``, ``redray.demands``, ``redray.dead_letters``:
what ``redray list``, ``redray status`` and ``redray dead-letters`` print).

Each function takes the driver runtime the reader holds and returns plain
JSON-able data. Nothing here writes to Redis.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redray
from redray import dead_letters
from redray.demands import read_demands
from redray.recovery import NODE_TIMEOUT
from redray.resources import from_units, units_of
from redray.runtime import Runtime
from redray.util import state

from .reader import ClusterReader

#: rows a listing panel shows at most (the page says when there are more)
PANEL_LIMIT = 200
RUNNING_STATES = ("RUNNING", "RUNNING_IN_RAY_GET")


def _server_time(rt: Runtime) -> float:
    seconds, micros = rt.client.time()
    return float(seconds) + float(micros) / 1e6


def nodes(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Each live node: resources used/total and seconds since its last heartbeat."""
    now = _server_time(rt)
    infos = redray.nodes()
    pipe = rt.client.pipeline(transaction=False)
    for info in infos:
        pipe.hgetall(rt.keys.node_avail(info["NodeID"]))
    out = []
    for info, avail in zip(infos, pipe.execute()):
        total: dict[str, float] = info.get("Resources") or {}
        free = {k.decode(errors="replace"): from_units(units_of(v)) for k, v in avail.items()}
        beat = info.get("LastHeartbeat")
        age = None if beat is None else max(now - float(beat), 0.0)
        out.append(
            {
                "node_id": info["NodeID"],
                "ip": info.get("NodeManagerAddress", ""),
                "hostname": info.get("NodeManagerHostname", ""),
                "alive": age is not None and age < NODE_TIMEOUT,
                "heartbeat_age_s": age,
                "resources": [
                    {
                        "name": name,
                        "total": total[name],
                        "used": max(total[name] - free.get(name, 0.0), 0.0),
                    }
                    for name in sorted(total, key=lambda n: (n not in ("CPU", "GPU"), n))
                ],
            }
        )
    return {"nodes": out}


def tasks(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Task counts by state, and by function and state (``summarize_tasks``)."""
    summary = state.summarize_tasks()["cluster"]
    by_state: dict[str, int] = {}
    by_function = []
    for name, entry in sorted(summary["summary"].items()):
        counts = entry["state_counts"]
        for key, count in counts.items():
            by_state[key] = by_state.get(key, 0) + count
        by_function.append({"name": name, "type": entry["type"], "state_counts": counts})
    return {"by_state": by_state, "by_function": by_function}


def running(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Running tasks with their node and age (seconds since this dashboard
    first saw them running: the cluster keeps no start time for them)."""
    now = _server_time(rt)
    listed = [t for t in state.list_tasks(limit=100_000) if t.state in RUNNING_STATES]
    seen = reader.first_seen_running
    current = {t.task_id for t in listed}
    for gone in [tid for tid in seen if tid not in current]:
        del seen[gone]
    out: list[dict[str, Any]] = []
    for task in listed:
        first = seen.setdefault(task.task_id, now)
        out.append(
            {
                "task_id": task.task_id,
                "name": task.name,
                "function": task.func_or_class_name,
                "state": task.state,
                "node_id": task.node_id,
                "worker_id": task.worker_id,
                "age_s": now - first,
            }
        )
    out.sort(key=lambda t: -float(t["age_s"]))
    return {"running": out[:PANEL_LIMIT], "total": len(out)}


def actors(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Actors that are not dead yet: state, restarts and node."""
    listed = state.list_actors(limit=100_000)
    rows = [
        {
            "actor_id": a.actor_id,
            "class_name": a.class_name,
            "name": a.name,
            "namespace": a.ray_namespace,
            "state": a.state,
            "num_restarts": a.num_restarts,
            "node_id": a.node_id,
            "pid": a.pid,
        }
        for a in listed
    ]
    return {"actors": rows[:PANEL_LIMIT], "total": len(rows)}


def jobs(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """The jobs whose driver is connected, less the dashboard's own."""
    own = rt.job_id
    rows = [
        {
            "job_id": j.job_id,
            "status": j.status,
            "entrypoint": j.entrypoint,
            "start_time_ms": j.start_time,
            "driver_pid": (j.driver_info or {}).get("pid"),
            "driver_host": (j.driver_info or {}).get("node_ip_address"),
        }
        for j in state.list_jobs(limit=100_000)
        if j.job_id != own
    ]
    return {"jobs": rows}


def objects(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """The objects the live jobs own: per owner (job) totals, then the largest."""
    listed = state.list_objects(limit=1_000_000)
    per_job: dict[str, dict[str, Any]] = {}
    for obj in listed:
        owner = per_job.setdefault(obj.job_id or "", {"job_id": obj.job_id, "count": 0, "bytes": 0})
        owner["count"] += 1
        owner["bytes"] += obj.object_size or 0
    largest = sorted(listed, key=lambda o: -(o.object_size or 0))[:PANEL_LIMIT]
    return {
        "total": len(listed),
        "total_bytes": sum(o.object_size or 0 for o in listed),
        "by_owner": sorted(per_job.values(), key=lambda o: -o["bytes"]),
        "largest": [
            {"object_id": o.object_id, "size": o.object_size, "job_id": o.job_id} for o in largest
        ],
    }


def queues(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Waiting work per resource shape, as ``redray status`` shows it."""
    return {
        "demands": [
            {
                "resources": d.resources,
                "queued": d.queued,
                "waiting_for_inputs": d.waiting_for_inputs,
                "infeasible": d.infeasible,
                "missing": d.missing,
            }
            for d in read_demands(rt.client, rt.keys)
        ]
    }


def dead_letter_list(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """The newest items redray dropped as malformed (their raw data left out)."""
    letters = dead_letters.read(rt.client, rt.keys, 50)
    return {"dead_letters": [{k: v for k, v in item.items() if k != "data"} for item in letters]}


def cluster(reader: ClusterReader, rt: Runtime) -> dict[str, Any]:
    """Where the dashboard reads from (no password) and the server's clock."""
    return {"address": rt.settings.display, "time": _server_time(rt)}


#: URL path -> endpoint
ENDPOINTS: dict[str, Callable[[ClusterReader, Runtime], dict[str, Any]]] = {
    "/api/cluster": cluster,
    "/api/nodes": nodes,
    "/api/tasks": tasks,
    "/api/tasks/running": running,
    "/api/actors": actors,
    "/api/jobs": jobs,
    "/api/objects": objects,
    "/api/queues": queues,
    "/api/dead_letters": dead_letter_list,
}
