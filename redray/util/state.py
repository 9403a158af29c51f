"""Cluster state listings, as in ``ray.util.state`` (a small subset)."""

from __future__ import annotations

from typing import Any


def list_actors() -> list[dict[str, Any]]:
    """Actors that are not dead yet, with where they live."""
    from .. import session
    from ..actor_lifecycle import actor_info

    runtime = session.current_runtime()
    members: Any = runtime.client.smembers(runtime.keys.actors)
    out = []
    for raw in sorted(members):
        actor_id = raw.decode()
        info = actor_info(runtime.cluster, actor_id)
        if not info:
            continue
        out.append(
            {
                "actor_id": actor_id,
                "class_name": info.get("class_name", ""),
                "name": info.get("name", ""),
                "namespace": info.get("namespace", ""),
                "state": info.get("state", ""),
                "node_id": info.get("node", ""),
                "pid": int(info["pid"]) if info.get("pid") else None,
                "job_id": info.get("job", ""),
                "is_detached": info.get("detached") == "1",
            }
        )
    return out


def list_nodes() -> list[dict[str, Any]]:
    """The live nodes (``redray.nodes()``)."""
    from .. import api

    return api.nodes()
