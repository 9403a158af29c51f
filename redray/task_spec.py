"""The task spec: what a worker needs to run one task, as stored in Redis."""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

from .signing import CALL, SPEC, SignatureError, Signer, hint_of

SPEC_VERSION = 1


class DepArg:
    """Stands in a task's arguments for the value of a top-level ObjectRef."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __reduce__(self) -> Any:
        return (DepArg, (self.index,))


class TaskSpec(NamedTuple):
    task_id: str
    job_id: str
    #: Redis key of the cloudpickled function, and its content hash
    function_key: str
    function_digest: str
    #: ``module.qualname`` for messages
    function_name: str
    #: packed frames of ``(args, kwargs)`` with DepArg placeholders
    args: bytes
    #: object ids of top-level ObjectRef arguments, in DepArg index order
    deps: tuple[str, ...]
    #: a count, or "streaming" / "dynamic" for generator tasks
    num_returns: int | str
    #: worker id whose inbox gets the completion notice
    owner: str
    max_retries: int
    #: False, True, or a tuple of exception classes (pickled by reference)
    retry_exceptions: Any
    #: rarely used options (runtime_env env_vars, name, ...), or None
    extra: dict[str, Any] | None = None
    #: the submitting job's namespace (named actors are looked up in it)
    namespace: str = ""


def result_indexes(spec: TaskSpec) -> list[int]:
    """Object indexes a task's final publish covers: its return values, or
    the end record (index 0) of a streaming generator."""
    if spec.num_returns == "streaming":
        return [0]
    if spec.num_returns == "dynamic":
        return [1]
    return list(range(1, int(spec.num_returns) + 1))


def encode(spec: TaskSpec) -> bytes:
    return pickle.dumps((SPEC_VERSION, tuple(spec)), protocol=5)


def seal(signer: Signer, spec: TaskSpec, actor_id: str | None = None) -> bytes:
    """The spec as stored in Redis: signed (with a cluster secret) for its task,
    or, for an actor call (``actor_id``), for that actor's mailbox; the hint
    names its owner and job, whom a failed check is reported to."""
    hint = f"{spec.owner}\0{spec.job_id}\0{spec.task_id}".encode()
    if actor_id is None:
        return signer.seal(SPEC, spec.task_id, encode(spec), hint)
    return signer.seal(CALL, actor_id, encode(spec), hint)


def open_spec(signer: Signer, data: bytes, *, task_id: str = "", actor_id: str = "") -> TaskSpec:
    """Check and decode a stored spec: that of task ``task_id``, or a call in
    actor ``actor_id``'s mailbox. SignatureError (a ValueError) if it fails
    its check: it was not unpickled; ValueError if it is not a spec."""
    if actor_id:
        payload = signer.open(CALL, actor_id, data)
    else:
        payload = signer.open(SPEC, task_id, data)
    spec = decode(bytes(payload))
    if actor_id == "" and task_id and spec.task_id != task_id:
        raise SignatureError(f"it is the spec of task {spec.task_id}, stored as {task_id}'s")
    return spec


def owner_of(data: bytes) -> tuple[str, str, str]:
    """(owner, job, task id) a spec's envelope names, unchecked: only ever
    used to address the error saying the spec failed its check."""
    parts = hint_of(data).decode("utf-8", errors="replace").split("\0")
    owner, job, task = (parts + ["", "", ""])[:3]
    return owner, job, task


def decode(data: bytes) -> TaskSpec:
    """Parse a spec; ValueError for anything that is not one."""
    try:
        version, fields = pickle.loads(data)
    except Exception as exc:
        raise ValueError(f"malformed task spec ({len(data)} bytes): {exc!r}") from exc
    if version != SPEC_VERSION or not isinstance(fields, tuple):
        raise ValueError(f"unsupported task spec version {version!r}")
    try:
        spec = TaskSpec(*fields)
    except TypeError as exc:
        raise ValueError(f"task spec has wrong fields: {exc}") from exc
    _check(spec)
    return spec


_TEXT_FIELDS = ("task_id", "job_id", "function_key", "function_digest", "function_name", "owner")


def _check(spec: TaskSpec) -> None:
    """ValueError naming the first field of the wrong type: a spec that decodes
    but does not hold what a worker reads must fail here, not deep in a worker."""
    for name in _TEXT_FIELDS:
        if not isinstance(getattr(spec, name), str):
            raise ValueError(f"task spec field {name!r} is not text")
    if not isinstance(spec.namespace, str):
        raise ValueError("task spec field 'namespace' is not text")
    if not isinstance(spec.args, (bytes, bytearray)):
        raise ValueError("task spec field 'args' is not bytes")
    if not isinstance(spec.deps, tuple) or not all(isinstance(d, str) for d in spec.deps):
        raise ValueError("task spec field 'deps' is not a tuple of object ids")
    n = spec.num_returns
    if not (n in ("streaming", "dynamic") or (type(n) is int and n >= 0)):
        raise ValueError(f"task spec field 'num_returns' is invalid: {n!r}")
    if type(spec.max_retries) is not int:
        raise ValueError("task spec field 'max_retries' is not an integer")
    if not isinstance(spec.retry_exceptions, (bool, tuple)):
        raise ValueError("task spec field 'retry_exceptions' is neither a bool nor a tuple")
    if spec.extra is not None and not isinstance(spec.extra, dict):
        raise ValueError("task spec field 'extra' is not a dict")
