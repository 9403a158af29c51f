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


class ObjectFetchTimedOutError(ObjectLostError):
    """Fetching an object's value took longer than allowed."""


class OwnerDiedError(ObjectLostError):
    """The driver that owned an object has died, taking the object with it."""


class OutOfMemoryError(RayError):
    """A task or actor used more memory than it declared or the node had."""


class RayActorError(RayError):
    """An actor is dead or could not be created, so its method call failed."""

    def __init__(
        self, message: str = "The actor died unexpectedly.", cause: BaseException | None = None
    ) -> None:
        self.message = message
        #: the error that killed the actor (e.g. raised by its __init__), if known
        self.cause = cause
        super().__init__(message)

    def __reduce__(self) -> Any:
        return (type(self), (self.message, self.cause))


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


__all__ = [
    "ActorDiedError",
    "ActorOutOfMemoryError",
    "ActorUnavailableError",
    "CrossLanguageError",
    "GetTimeoutError",
    "JobReapedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "WorkerCrashedError",
]
