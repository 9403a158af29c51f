"""Results that stand for a dead actor: its death record, and failing a call with it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import ids
from . import task_spec as ts
from .exceptions import ActorDiedError
from .scripts import ReturnValue, Scripts
from .serialization import KIND_ERROR, decode_small, encode_record
from .signing import DEATH, Signer

#: turns an exception into frames (ObjectClient.error_frames)
ErrorFrames = Callable[[BaseException], list[Any]]


def death_record(
    error_frames: ErrorFrames, signer: Signer, actor_id: str, error: BaseException
) -> bytes:
    """The record that stands for a dead actor's results (signed for the
    actor: each failed call gets a copy signed for its own result)."""
    fields = encode_record(KIND_ERROR, error_frames(error))
    return signer.seal(DEATH, actor_id, bytes(fields["d"]))


def fail_call(
    scripts: Scripts,
    error_frames: ErrorFrames,
    signer: Signer,
    spec_bytes: bytes,
    death: bytes,
    *,
    actor_id: str,
    entry_id: str = "",
) -> None:
    """Publish a dead actor's death record as the result of one call (and,
    given its mailbox entry, acknowledge that entry in the same step)."""
    try:
        spec = ts.open_spec(signer, spec_bytes, actor_id=actor_id)
    except ValueError:
        return
    try:
        kind, frames = decode_small(signer.open(DEATH, actor_id, death)) if death else (b"", [])
    except ValueError:  # a forged or unreadable death record: say so, in one we trust
        kind = b""
    if kind != KIND_ERROR:
        err = ActorDiedError(
            f"The actor for {spec.function_name} ({actor_id}) is dead.", actor_id=actor_id
        )
        kind, frames = KIND_ERROR, error_frames(err)
    returns = []
    for i in ts.result_indexes(spec):
        oid = ids.return_id(spec.task_id, i)
        returns.append(ReturnValue(oid, bytes(encode_record(kind, frames, signer, oid)["d"])))
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
