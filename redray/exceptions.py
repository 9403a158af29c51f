"""redray's exception hierarchy, with Ray's names and meaning."""

from __future__ import annotations

from typing import Any


class RayError(Exception):
    """Base class of every error redray raises on behalf of the cluster."""


class RaySystemError(RayError):
    """redray itself failed (a corrupt record, an unexpected server reply)."""


class RayTaskError(RayError):
    """A task or actor method raised an exception.

    ``get`` raises it as a subclass of both ``RayTaskError`` and the class of the
    user's exception, so ``except ValueError`` still catches a remote ValueError.
    Its text holds the remote traceback.
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None = None,
        proctitle: str = "",
        pid: int = 0,
        ip: str = "",
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        # a task that failed because a task it waited on failed: keep the
        # original cause, not a RayTaskError of a RayTaskError (as Ray does)
        while isinstance(cause, RayTaskError):
            inner: BaseException | None = cause.__dict__.get("cause")
            if inner is None:
                break
            cause = inner
        self.cause: BaseException | None = cause
        self.proctitle = proctitle
        self.pid = pid
        self.ip = ip
        # not super(): in the dual class the next __init__ would be the user's
        Exception.__init__(self, function_name, traceback_str)

    def __str__(self) -> str:
        return (
            f"{type(self.cause).__name__ if self.cause is not None else 'Error'} "
            f"raised in {self.function_name} (pid={self.pid}, ip={self.ip})\n"
            f"{self.traceback_str}"
        )

    def __reduce__(self) -> Any:
        return (
            RayTaskError,
            (
                self.function_name,
                self.traceback_str,
                _portable(self.cause),
                self.proctitle,
                self.pid,
                self.ip,
            ),
        )

    def as_instanceof_cause(self) -> RayTaskError:
        """This error as an instance of ``RayTaskError`` *and* the cause's class."""
        cause = self.cause
        if cause is None or isinstance(cause, RayTaskError):
            return self
        cause_cls = type(cause)
        if not issubclass(cause_cls, Exception):
            return self
        try:
            dual = _dual_class(cause_cls)
            err: RayTaskError = Exception.__new__(dual)
        except TypeError:
            return self
        RayTaskError.__init__(
            err, self.function_name, self.traceback_str, cause, self.proctitle, self.pid, self.ip
        )
        err.args = cause.args if cause.args else err.args
        return err


class _ExceptionState:
    """Rebuilds an exception without calling its ``__init__``.

    Pickling an exception re-runs ``cls(*args)``, which fails for classes whose
    ``__init__`` takes other arguments than it passes to ``Exception``; this
    restores ``args`` and the attributes instead.
    """

    def __init__(self, cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> None:
        self.cls, self.args, self.state = cls, args, state

    def __reduce__(self) -> Any:
        return (_restore_exception, (self.cls, self.args, self.state))


def _restore_exception(cls: type, args: tuple[Any, ...], state: dict[str, Any]) -> BaseException:
    err: BaseException = cls.__new__(cls)  # type: ignore[call-overload]
    err.args = args
    err.__dict__.update(state)
    return err


def _portable(cause: BaseException | None) -> Any:
    if cause is None or type(cause).__reduce__ is not BaseException.__reduce__:
        return cause  # None, or a class that pickles itself its own way
    return _ExceptionState(type(cause), cause.args, dict(cause.__dict__))


_DUAL_CLASSES: dict[type, type] = {}


def _dual_class(cause_cls: type) -> type:
    cls = _DUAL_CLASSES.get(cause_cls)
    if cls is None:

        def __str__(self: RayTaskError) -> str:
            return RayTaskError.__str__(self)

        def __reduce__(self: RayTaskError) -> Any:
            return RayTaskError.__reduce__(self)

        def __getattr__(self: RayTaskError, name: str) -> Any:
            # Attributes of the user's exception (e.g. ``err.code``) stay reachable.
            cause = self.__dict__.get("cause")
            if cause is None:
                raise AttributeError(name)
            return getattr(cause, name)

        cls = type(
            f"RayTaskError({cause_cls.__name__})",
            (RayTaskError, cause_cls),
            {"__str__": __str__, "__reduce__": __reduce__, "__getattr__": __getattr__},
        )
        cls.__module__ = __name__
        _DUAL_CLASSES[cause_cls] = cls
    return cls


class GetTimeoutError(RayError, TimeoutError):
    """``get`` or ``wait`` ran out of time before the objects were ready."""


class TaskCancelledError(RayError):
    """The task was cancelled with ``redray.cancel`` before it could finish."""

    def __init__(self, task_id: str | None = None, message: str | None = None) -> None:
        self.task_id = task_id
        super().__init__(message or f"Task {task_id} was cancelled.")

    def __reduce__(self) -> Any:
        # the default would pass the message as task_id
        return (type(self), (self.task_id, str(self)))


class WorkerCrashedError(RayError):
    """The process running the task died before the task finished."""


class ObjectLostError(RayError):
    """An object's value is gone from the cluster (freed, or its job ended)."""

    def __init__(self, object_id: str, message: str | None = None) -> None:
        self.object_id = object_id
        super().__init__(
            message
            or f"Object {object_id} is lost: its value was freed or the job that owned it ended."
        )

    def __reduce__(self) -> Any:
        # the default would pass the message as object_id
        return (type(self), (self.object_id, str(self)))


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching an object's value took longer than allowed."""


class OwnerDiedError(ObjectLostError):
    """The driver that owned an object has died, taking the object with it."""


class OutOfMemoryError(RayError):
    """A task or actor used more memory than it declared or the node had."""


class RayActorError(RayError):
    """An actor is dead or could not be created, so its method call failed.

    ``actor_id`` is the actor's id (hex) when known; ``error_msg`` the message;
    ``actor_init_failed`` whether its ``__init__`` raised (``cause``), as in Ray.
    """

    def __init__(
        self,
        message: str = "The actor died unexpectedly.",
        cause: BaseException | None = None,
        actor_id: str | None = None,
    ) -> None:
        self.message = message
        #: the error that killed the actor (e.g. raised by its __init__), if known
        self.cause = cause
        self.actor_id = actor_id
        super().__init__(message)

    @property
    def error_msg(self) -> str:
        return self.message

    @property
    def actor_init_failed(self) -> bool:
        return self.cause is not None

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.cause, self.actor_id))


class ActorDiedError(RayActorError):
    """The actor's process died or it was killed; calls to it fail."""


class ActorOutOfMemoryError(ActorDiedError, OutOfMemoryError):
    """The actor's process was killed for using more memory than its ``memory=``;
    caught by ``except OutOfMemoryError`` as well as ``except ActorDiedError``."""


class ActorUnavailableError(RayError):
    """The actor is temporarily unreachable (restarting); the call may be retried."""


class ObjectStoreFullError(RayError):
    """Redis refused to store an object (its ``maxmemory`` was reached)."""


class PendingCallsLimitExceeded(RayError):
    """Too many calls are queued for an actor (``max_pending_calls``)."""


class RuntimeEnvSetupError(RayError):
    """The runtime environment a task asked for could not be prepared."""


class CrossLanguageError(RayError):
    """Kept for Ray compatibility: redray only speaks Python."""


class NodeDiedError(RayError):
    """The node that ran the task stopped heartbeating."""


class JobReapedError(RaySystemError):
    """The cluster cleaned up this driver's job: the driver was silent
    (paused, cut off from Redis) for longer than its grace period (redray)."""


# The rest of Ray's ``ray.exceptions``, with Ray's base classes. Most stand
# for failures redray cannot have (no placement groups, raylet, plasma store,
# gRPC layer, compiled graphs, lineage reconstruction or spilling) and are
# never raised: they exist so that Ray code importing them, or catching them
# in ``except`` clauses, keeps working.


class _MessageError(RayError):
    """An error made of Ray's ``error_message`` (kept as an attribute), shown
    through the subclass's ``_template``."""

    _template = "{}"

    def __init__(self, error_message: str) -> None:
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return self._template.format(self.error_message)


class ActorAlreadyExistsError(_MessageError, ValueError):
    """A new actor was given a name another live actor in that namespace has.

    A ``ValueError`` too, as in Ray: ``Cls.options(name=...).remote()``
    raises it when the name is taken (and ``get_if_exists`` is not set).
    """


class ActorHandleNotFoundError(_MessageError, ValueError):
    """Ray: ``kill`` of a handle from an earlier session. A ``ValueError`` too.

    Defined for compatibility: redray's ``kill`` of an unknown actor does nothing.
    """


class ActorPlacementGroupRemoved(RayError):
    """Ray: the actor's placement group was removed. Never raised by redray,
    which has no placement groups; defined for compatibility."""

    def __str__(self) -> str:
        return "The placement group corresponding to this Actor has been removed."


class TaskPlacementGroupRemoved(RayError):
    """Ray: the task's placement group was removed. Never raised by redray,
    which has no placement groups; defined for compatibility."""

    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed."


# Never raised by redray: work no node can fit stays pending (with a warning)
# until a node that fits joins, and scheduling strategies are ignored.


class ActorUnschedulableError(_MessageError):
    """Ray: the actor can never be placed (e.g. its node-affinity node is dead).
    Defined for compatibility."""

    _template = "The actor is not schedulable: {}"


class TaskUnschedulableError(_MessageError):
    """Ray: the task can never be placed (e.g. its node-affinity node is dead).
    Defined for compatibility."""

    _template = "The task is not schedulable: {}"


class AsyncioActorExit(RayError):
    """How ``exit_actor()`` leaves an asyncio actor: raised inside the actor's
    method, it ends the actor after that call (as in Ray)."""


class AuthenticationError(RayError):
    """Ray: the cluster's authentication token is missing or wrong.

    Never raised by redray: a wrong Redis password is a ``ConnectionError``
    and a payload with a bad signature a ``RaySystemError``. Defined for
    compatibility.
    """

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class LocalRayletDiedError(RayError):
    """Ray: the raylet of the task's node died. Never raised by redray (no
    raylet: a dead node's tasks fail with ``WorkerCrashedError`` once their
    retries are spent); defined for compatibility."""


class ObjectFreedError(ObjectLostError):
    """Ray: the object was freed with the internal ``free`` call. Never
    raised by redray (no ``free``); defined for compatibility."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Ray: a lost object could not be rebuilt from its lineage. Never raised
    by redray, which does not reconstruct lost objects (``ObjectLostError``);
    defined for compatibility."""


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    """Ray: an object was deleted while a reference to it remained (a bug).
    Never raised by redray; defined for compatibility."""


class ObjectRefStreamEndOfStreamError(RayError):
    """Ray: a streaming generator has no more ObjectRefs to read. Never raised
    by redray, whose ``ObjectRefGenerator`` ends with ``StopIteration`` (and
    ``StopAsyncIteration``) as Ray's iteration does; defined for compatibility."""


class OufOfBandObjectRefSerializationException(RayError):
    """Ray (with its spelling): an ``ObjectRef`` was pickled out of band with
    ``ray.cloudpickle``. Never raised by redray, where such a ref stays valid
    until its job ends; defined for compatibility."""


class OutOfDiskError(RayError):
    """Ray: the object store and the disk it spills to are both full. Never
    raised by redray, which keeps objects in Redis and does not spill (a full
    Redis is ``ObjectStoreFullError``); defined for compatibility."""


class PlasmaObjectNotAvailable(RayError):
    """Ray: a plasma object was not available in time. Never raised by redray
    (no plasma store); defined for compatibility."""


class RpcError(RayError):
    """Ray: an error of its gRPC layer. Never raised by redray (it speaks to
    Redis: a lost server is a ``ConnectionError``); defined for compatibility."""

    def __init__(self, message: str, rpc_code: int | None = None) -> None:
        self.message = message
        self.rpc_code = rpc_code
        super().__init__(message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.rpc_code))


class RayChannelError(RaySystemError):
    """Ray: an error of a compiled-graph channel. Never raised by redray (no
    compiled graphs); defined for compatibility."""


class RayChannelTimeoutError(RayChannelError, TimeoutError):
    """Ray: a compiled-graph channel operation timed out. Never raised by
    redray (no compiled graphs); defined for compatibility."""


class RayCgraphCapacityExceeded(RaySystemError):
    """Ray: a compiled-graph channel's buffer is full. Never raised by redray
    (no compiled graphs); defined for compatibility."""


class RayDirectTransportError(RaySystemError):
    """Ray: a direct-transport (tensor) transfer failed. Never raised by
    redray (every object goes through Redis); defined for compatibility."""


class StreamingGeneratorReplayInconsistentError(RaySystemError):
    """Ray: a retried streaming generator yielded a different number of
    values than its first attempt. Never raised by redray; defined for
    compatibility."""


class UnserializableException(RayError):
    """Ray: a task's exception could not be unpickled where it was raised
    again; holds the original's text and traceback.

    Never raised by redray: an exception that cannot be pickled comes back as
    a ``RayTaskError`` whose cause is a ``RayError`` saying so. Defined for
    compatibility.
    """

    def __init__(self, original_stack_trace: str) -> None:
        self._original_stack_trace = original_stack_trace
        super().__init__(original_stack_trace)

    def __str__(self) -> str:
        return f"Failed to deserialize exception. Original exception:\n{self._original_stack_trace}"


class UserCodeException(RayError):
    """Ray: wraps an exception raised by user code. Never raised by redray
    (a task's exception reaches ``get`` as a ``RayTaskError`` that is also
    an instance of the original class); defined for compatibility."""


__all__ = [
    "ActorAlreadyExistsError",
    "ActorDiedError",
    "ActorHandleNotFoundError",
    "ActorOutOfMemoryError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "AsyncioActorExit",
    "AuthenticationError",
    "CrossLanguageError",
    "GetTimeoutError",
    "JobReapedError",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectRefStreamEndOfStreamError",
    "ObjectStoreFullError",
    "OufOfBandObjectRefSerializationException",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "PlasmaObjectNotAvailable",
    "RayActorError",
    "RayCgraphCapacityExceeded",
    "RayChannelError",
    "RayChannelTimeoutError",
    "RayDirectTransportError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RpcError",
    "RuntimeEnvSetupError",
    "StreamingGeneratorReplayInconsistentError",
    "TaskCancelledError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnserializableException",
    "UserCodeException",
    "WorkerCrashedError",
]
