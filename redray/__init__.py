"""redray: Ray Core's remote tasks and objects, rebuilt on Redis.

``import redray as ray`` and a Ray task program runs unchanged::

    import redray as ray

    @ray.remote
    def add(x, y):
        return x + y

    print(ray.get(add.remote(1, 2)))
"""

from . import exceptions, util
from . import job_config as job_config  # ray.job_config.JobConfig
from .actor import ActorClass, ActorHandle, get_actor, kill
from .api import (
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    method,
    nodes,
    put,
    remote,
    shutdown,
    wait,
)
from .generator import DynamicObjectRefGenerator, ObjectRefGenerator
from .id_types import (
    ActorClassID,
    ActorID,
    FunctionID,
    JobID,
    NodeID,
    PlacementGroupID,
    TaskID,
    UniqueID,
    WorkerID,
)
from .object_ref import ObjectRef
from .remote_function import RemoteFunction
from .settings import Settings
from .timeline import timeline

#: Ray's old name for ObjectRef (``ray.ObjectID is ray.ObjectRef``)
ObjectID = ObjectRef

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "DynamicObjectRefGenerator",
    "ActorClassID",
    "ActorHandle",
    "ActorID",
    "FunctionID",
    "JobID",
    "NodeID",
    "ObjectID",
    "PlacementGroupID",
    "TaskID",
    "UniqueID",
    "WorkerID",
    "get_actor",
    "kill",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "Settings",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "util",
    "get",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]
