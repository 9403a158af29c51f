"""Results that stand for a dead actor: its death record, and failing a call with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import ids
from . import task_spec as ts
from .exceptions import ActorDiedError
from .scripts import ReturnValue, Scripts
from .serialization import KIND_ERROR, encode_record

#: turns an exception into frames (ObjectClient.error_frames)
ErrorFrames = Callable[[BaseException], list[Any]]


def death_record(error_frames: ErrorFrames, error: BaseException) -> bytes:
    """The object record that stands for a dead actor's results."""
    fields = encode_record(KIND_ERROR, error_frames(error))
    return bytes(fields["d"])


def fail_call(
    scripts: Scripts,
    error_frames: ErrorFrames,
    spec_bytes: bytes,
    death: bytes,
    *,
    actor_id: str = "",
    entry_id: str = "",
) -> None:
    """Publish a dead actor's death record as the result of one call (and,
    given its mailbox entry, acknowledge that entry in the same step)."""
    try:
        spec = ts.decode(spec_bytes)
    except ValueError:
        return
    record = death
    if not record:
        err = ActorDiedError(f"The actor for {spec.function_name} is dead.")
        record = death_record(error_frames, err)
    returns = [ReturnValue(ids.return_id(spec.task_id, i), record) for i in ts.result_indexes(spec)]
    scripts.complete(
        task_id=spec.task_id,
        job_id=spec.job_id,
        owner=spec.owner,
        node_id=None,
        returns=returns,
        actor_id=actor_id,
        entry_id=entry_id,
        retry=True,
    )
