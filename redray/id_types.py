"""Ray's id classes: ``JobID``, ``TaskID``, ``NodeID``, ``ActorID``, ``WorkerID``, ...

Ray's ids are fixed-size binary strings; redray's are the text ids its
records are keyed by (a job id is 8 hex digits, an actor id ``a`` and 24 hex
digits, a driver's worker id ``driver-`` and 16 hex digits). An id object
wraps that text: ``hex()`` gives it back unchanged, so
``ctx.job_id.hex() == ctx.get_job_id()`` as in Ray. ``nil()`` and
``from_random()`` make ids of Ray's size.
"""

from __future__ import annotations

import builtins
import os
from typing import Any, ClassVar, TypeVar

_ID = TypeVar("_ID", bound="BaseID")


class BaseID:
    """An id: compared and hashed by class and value, never ordered (as Ray's)."""

    __slots__ = ("_id",)

    #: the size in bytes of Ray's ids of this kind (of ``nil()`` and ``from_random()``)
    _SIZE: ClassVar[int] = 28

    def __init__(self, id: bytes) -> None:
        if not isinstance(id, bytes):
            raise TypeError(f"Unsupported type: {type(id)}, expected bytes")
        self._id = id.hex()

    @classmethod
    def from_binary(cls: type[_ID], id_bytes: bytes) -> _ID:
        return cls(id_bytes)

    @classmethod
    def from_hex(cls: type[_ID], hex_id: str) -> _ID:
        """The id whose ``hex()`` is ``hex_id`` (any redray id text)."""
        if not isinstance(hex_id, str):
            raise TypeError(f"Unsupported type: {type(hex_id)}, expected str")
        obj = cls.__new__(cls)
        obj._id = hex_id
        return obj

    @classmethod
    def nil(cls: type[_ID]) -> _ID:
        return cls.from_hex("ff" * cls._SIZE)

    @classmethod
    def size(cls) -> int:
        return cls._SIZE

    def hex(self) -> str:
        return self._id

    def binary(self) -> bytes:
        try:
            return bytes.fromhex(self._id)
        except ValueError:
            # a redray id that is not all hex digits (``a...``, ``driver-...``)
            return self._id.encode()

    def is_nil(self) -> bool:
        # "" is what redray reports where Ray has a nil id (a driver on no node)
        return all(c in "fF" for c in self._id)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._id == self._id

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._id))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._id})"

    __str__ = __repr__

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self).from_hex, (self._id,)


class UniqueID(BaseID):
    """Ray's ``UniqueID``: the base of the 28-byte ids."""

    __slots__ = ()

    @classmethod
    def from_random(cls: type[_ID]) -> _ID:
        return cls.from_hex(os.urandom(cls._SIZE).hex())


class NodeID(UniqueID):
    """The id of a node (``get_runtime_context().get_node_id()``)."""

    __slots__ = ()


class WorkerID(UniqueID):
    """The id of a worker or driver process (``get_worker_id()``)."""

    __slots__ = ()


class FunctionID(UniqueID):
    __slots__ = ()


class ActorClassID(UniqueID):
    __slots__ = ()


class JobID(BaseID):
    """The id of a job: one per driver (``get_runtime_context().get_job_id()``)."""

    __slots__ = ()
    _SIZE = 4

    @classmethod
    def from_int(cls, value: builtins.int) -> JobID:
        # redray numbers its jobs and writes the number as 8 hex digits
        return cls.from_hex(f"{value:08x}")

    def int(self) -> builtins.int:
        return builtins.int(self._id, 16)


class TaskID(BaseID):
    """The id of a task, an actor method call or an actor creation."""

    __slots__ = ()
    _SIZE = 24


class ActorID(BaseID):
    """The id of an actor (``get_actor_id()``, ``handle._actor_id``)."""

    __slots__ = ()
    _SIZE = 16

    @classmethod
    def from_random(cls) -> ActorID:
        return cls.from_hex(os.urandom(cls._SIZE).hex())


class PlacementGroupID(BaseID):
    __slots__ = ()
    _SIZE = 18

    @classmethod
    def from_random(cls) -> PlacementGroupID:
        return cls.from_hex(os.urandom(cls._SIZE).hex())


__all__ = [
    "ActorClassID",
    "ActorID",
    "BaseID",
    "FunctionID",
    "JobID",
    "NodeID",
    "PlacementGroupID",
    "TaskID",
    "UniqueID",
    "WorkerID",
]
