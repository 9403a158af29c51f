"""How often an actor's method call runs again: Ray's per-call
``max_task_retries`` and ``retry_exceptions``.

A call is retried after the actor died running it (the next incarnation
claims its mailbox entry back, see ``ActorRunner.recover``) and, in the
process that runs it, after it raised an exception its policy allows
(``Retries``).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import NamedTuple

from redray import task_spec as ts
from redray.exceptions import AsyncioActorExit

from . import concurrency_groups as cg

log = logging.getLogger("redray.actor")


class RetryPolicy(NamedTuple):
    """How often a call may be run again: ``retries`` more times (-1: no
    limit) after the actor died running it, and after it raised an exception
    ``exceptions`` allows (True: any; a tuple: those classes; False: none)."""

    retries: int
    exceptions: bool | tuple[type[BaseException], ...]

    def allows(self, exc: BaseException, retried: int) -> bool:
        if self.retries != -1 and retried >= self.retries:
            return False
        if isinstance(self.exceptions, tuple):
            return isinstance(exc, self.exceptions)
        return self.exceptions is True


def retry_policy(cls: type, spec: ts.TaskSpec, default_retries: int) -> RetryPolicy:
    """The call's ``max_task_retries`` and ``retry_exceptions``, as Ray
    takes them: from ``.options()`` on the method, else from its
    ``@method(...)`` on the actor's class ``cls``, else the actor's
    ``max_task_retries`` (``default_retries``) and no retries on exceptions."""
    extra = spec.extra or {}
    opts = cg.method_options(cls, str(extra.get("method", "")))
    retries = extra.get("max_task_retries", opts.get("max_task_retries"))
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < -1:
        retries = default_retries
    exceptions = extra.get("retry_exceptions", opts.get("retry_exceptions", False))
    if isinstance(exceptions, list):
        exceptions = tuple(exceptions)
    if not isinstance(exceptions, (bool, tuple)):
        exceptions = False
    return RetryPolicy(retries, exceptions)


class Retries:
    """The runs of one call: ``with retries:`` around one run swallows (and
    logs, and counts) an exception the call's policy allows, so that the loop
    around it runs the call again; any other exception goes on.

    The policy is read at the first failure: most calls never need it."""

    def __init__(self, cls: type, spec: ts.TaskSpec, default_retries: int) -> None:
        self.cls = cls
        self.spec = spec
        self.default_retries = default_retries
        #: runs after the first
        self.retried = 0

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        # only an Exception: a cancel (CancelledError) or an exit (SystemExit) ends the call
        if not isinstance(exc, Exception) or not self._again(exc):
            return False
        self.retried += 1
        return True

    def _again(self, exc: Exception) -> bool:
        if isinstance(exc, AsyncioActorExit):
            return False  # exit_actor() in an async actor: never retried
        spec, retried = self.spec, self.retried
        policy = retry_policy(self.cls, spec, self.default_retries)
        if not policy.allows(exc, retried):
            return False
        left = "unlimited" if policy.retries == -1 else str(policy.retries - retried - 1)
        log.warning(
            "%s (task %s) raised %s: %s; running it again (%s retries left)",
            spec.function_name, spec.task_id, type(exc).__name__, exc, left,
        )  # fmt: skip
        return True
