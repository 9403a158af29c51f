"""An actor's mailbox: the Redis stream its calls arrive on, read with
XREADGROUP (consumer group ``actor``).

An entry is acknowledged and deleted by the same ``complete.lua`` call that
publishes its results, so "published" and "acknowledged" are one fact. After
a failed or timed-out read (its reply, and the entries it delivered, may be
lost) the entries already delivered to this consumer are read first, in
order, before new ones.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import redis

from redray import dead_letters, rejections, task_events
from redray import task_spec as ts
from redray.connections import BLOCK_MARGIN, TRANSIENT, Batch, Sent, blocking_call
from redray.constants import MAILBOX_GROUP
from redray.exceptions import RaySystemError
from redray.scripts import ReturnValue
from redray.signing import SignatureError

from . import output
from .execution import Host

READ_BLOCK_MS = 2000
READ_COUNT = 64

Entry = tuple[bytes, dict[bytes, bytes]]


class Terminate(Exception):
    """A published call asked the actor to end (``__ray_terminate__``, ``exit_actor()``)."""


class MailboxGone(Terminate):
    """The actor's mailbox was deleted under its read: it was killed, or its job ended."""


def _deleted(exc: BaseException) -> bool:
    """Whether a read failed because its stream or group is gone (Redis ends
    a blocked XREADGROUP with UNBLOCKED when its key is deleted, and later
    reads get NOGROUP)."""
    err = exc.__cause__ if isinstance(exc, RaySystemError) else exc
    return isinstance(err, redis.ResponseError) and str(err).startswith(("UNBLOCKED", "NOGROUP"))


_GONE = "its mailbox was deleted (the actor was killed or its job ended)"


class Done(NamedTuple):
    """A finished mailbox entry, ready to publish and acknowledge."""

    entry_id: bytes
    spec: ts.TaskSpec | None
    returns: list[ReturnValue]
    terminate: bool = False
    #: when the call started (task_events.now_ms), and its error's frames if it failed
    started_ms: int = 0
    error_frames: list[Any] | None = None


class Mailbox:
    """One actor's mailbox as this process reads it (the consumer: its worker id)."""

    def __init__(self, executor: Host, actor_id: str) -> None:
        self.ex = executor
        self.rt = executor.runtime
        self.keys = self.rt.keys
        self.actor_id = actor_id
        self.key = self.keys.mailbox(actor_id)
        self.consumer = executor.worker_id
        #: entries being run now (threaded and async actors): not re-read
        self.running: set[bytes] = set()
        #: a read failed: entries may have been delivered without reaching us
        self.reread = False

    # -- reading -----------------------------------------------------------------------
    def read(self) -> list[Entry]:
        """The next entries: first those already delivered to this process
        after a read failed (its reply may have carried them), then new ones.
        A read is never re-sent blindly (it moves entries to our pending list)."""
        if self.reread:
            pending = self._read_pending()
            self.reread = False
            if pending:
                return pending
        try:
            reply = blocking_call(
                self.rt.cluster.single_lane, READ_BLOCK_MS / 1000, *self._read_command()
            )
        except TRANSIENT:
            self.reread = True
            raise
        except (redis.ResponseError, RaySystemError) as exc:
            if _deleted(exc):
                raise MailboxGone(_GONE) from None
            raise
        return entries(reply)

    def _read_command(self, block: bool = True) -> tuple[Any, ...]:
        blocking = ("BLOCK", READ_BLOCK_MS) if block else ()
        return (
            "XREADGROUP",
            "GROUP",
            MAILBOX_GROUP,
            self.consumer,
            "COUNT",
            READ_COUNT,
            *blocking,
            "STREAMS",
            self.key,
            ">",
        )

    def _read_pending(self) -> list[Entry]:
        """Entries delivered to this consumer and not yet published, in order,
        less those running now (threaded and async actors)."""
        pipe = Batch(self.rt.cluster.single_lane)
        pipe.command("XREADGROUP", "GROUP", MAILBOX_GROUP, self.consumer, "STREAMS", self.key, "0")
        found = entries(pipe.execute()[0])
        return [(e, f) for e, f in found if e not in self.running and f]

    def claim_pending(self) -> list[tuple[bytes, Any, int]]:
        """Entries an earlier incarnation read but did not acknowledge, now
        ours, each with how often it was delivered."""
        client = self.rt.client
        try:
            pending = client.xpending_range(self.key, MAILBOX_GROUP, "-", "+", 10_000)
        except Exception:  # noqa: BLE001 - no group: nothing to recover
            return []
        if not pending:
            return []
        deliveries = {p["message_id"]: p["times_delivered"] for p in pending}
        ids_: list[Any] = [p["message_id"] for p in pending]
        claimed: Any = client.xclaim(self.key, MAILBOX_GROUP, self.consumer, 0, ids_)
        return [(e, f, int(deliveries.get(e, 1))) for e, f in claimed]

    def decode(self, entry_id: bytes, fields: dict[bytes, bytes]) -> ts.TaskSpec | None:
        """The call spec of a mailbox entry; None (and a dead letter) if it has none."""
        raw = fields.get(b"s", b"")
        try:
            return ts.open_spec(self.rt.signer, raw, actor_id=self.actor_id)
        except SignatureError as exc:
            why = f"the call failed its signature check in actor {self.actor_id}: {exc}"
            dead_letters.record(
                self.rt.client,
                self.keys,
                self.key,
                why,
                raw,
                actor=self.actor_id,
                entry=entry_id.decode(errors="replace"),
            )
            rejections.report(self.rt.cluster.single, self.keys, raw, "", why)
            return None
        except ValueError as exc:
            dead_letters.record(
                self.rt.client,
                self.keys,
                self.key,
                f"{exc} (fields: {sorted(k.decode(errors='replace') for k in fields)})",
                raw,
                actor=self.actor_id,
                entry=entry_id.decode(errors="replace"),
            )
            return None

    # -- publishing --------------------------------------------------------------------
    def publish(self, done: list[Done], first: bool = True) -> None:
        """Publish results and acknowledge their entries; across a Redis outage
        this is retried (it is idempotent), never re-run: a method call must not
        change the actor's state twice. Terminate if a call asked to."""
        events = first
        while True:
            try:
                self.rt.settle()  # nested submissions and puts reach Redis before the results
                output.flush()  # and what the calls printed
                pipe = Batch(self.rt.client)
                terminate = self._queue_publish(pipe, done, events)
                pipe.execute()
                break
            except TRANSIENT:
                # complete.lua is idempotent; the events' XADD is not: sent once
                events = False
                self.ex.wait_for_redis()
        for item in done:
            self.running.discard(item.entry_id)
        if terminate:
            raise Terminate

    def publish_and_read(self, done: list[Done]) -> list[Entry]:
        """Publish ``done`` (as ``publish``) and read the next entries, sent
        together in one round trip (a synchronous actor's way)."""
        if self.reread:
            # entries may have been delivered without reaching us: first those
            self.publish(done)
            return self.read()
        pipe = self._publish_with_read(done, block=True)
        try:
            reply = pipe.execute(timeout=READ_BLOCK_MS / 1000 + BLOCK_MARGIN)[-1]
        except TRANSIENT:
            self._lost_read(done)
            return self.read()
        except RaySystemError as exc:
            if _deleted(exc):
                raise MailboxGone(_GONE) from None
            raise
        return entries(reply)

    def send_ahead(self, done: list[Done]) -> Sent | None:
        """Send the publish of ``done`` and a read of the next entries that
        does not block, without waiting for the replies (``collect_ahead``):
        the actor runs the entries it has while Redis publishes and reads.
        None, ``done`` published, after a failed read (entries it may have
        delivered are read first) or a failed send; publish raises
        Terminate if ``done`` asks the actor to end."""
        if self.reread:
            self.publish(done)
            return None
        pipe = self._publish_with_read(done, block=False)
        try:
            return pipe.send()
        except TRANSIENT:
            self._lost_read(done)
            return None

    def collect_ahead(self, sent: Sent, done: list[Done]) -> list[Entry]:
        """The entries ``send_ahead`` read (``done`` is what it published)."""
        try:
            reply = sent.collect()[-1]
        except TRANSIENT:
            self._lost_read(done)
            return []
        except RaySystemError as exc:
            if _deleted(exc):
                raise MailboxGone(_GONE) from None
            raise
        return entries(reply)

    def _publish_with_read(self, done: list[Done], block: bool) -> Batch:
        """One batch: the publish of ``done`` (with its events), then a read
        of the next entries; publish raises Terminate if ``done`` asks the
        actor to end (the batch is never sent)."""
        self.rt.settle()
        output.flush()
        pipe = Batch(self.rt.cluster.single_lane)
        if self._queue_publish(pipe, done, events=True):
            self.publish(done)
        pipe.command(*self._read_command(block))
        return pipe

    def _lost_read(self, done: list[Done]) -> None:
        """After a publish-and-read batch failed: the publish is idempotent
        and done again (its events were sent, or lost: never twice); the read
        may have delivered entries we never saw: they are read back first."""
        self.reread = True
        self.publish(done, first=False)

    def _queue_publish(self, pipe: Batch, done: list[Done], events: bool) -> bool:
        """Add each call's publish to ``pipe``: one complete.lua call per entry
        that publishes its results and acknowledges and deletes the entry in one
        atomic step. True if asked to terminate."""
        terminate = False
        records: list[dict[str, str]] = []
        for item in done:
            terminate = terminate or item.terminate
            spec = item.spec
            entry = item.entry_id.decode()
            if spec is not None:
                if events and task_events.enabled(spec.extra):
                    records.append(_call_event(self, item, spec))
                self.rt.scripts.complete(
                    task_id=spec.task_id,
                    job_id=spec.job_id,
                    owner=spec.owner,
                    node_id=None,
                    returns=item.returns,
                    actor_id=self.actor_id,
                    entry_id=entry,
                    pipe=pipe,
                )
            else:
                # unreadable: only acknowledged (it went to the dead letters)
                pipe.command("XACK", self.key, MAILBOX_GROUP, entry)
                pipe.command("XDEL", self.key, entry)
        task_events.add(pipe, self.rt.keys, records)  # one RPUSH for the batch
        return terminate


def _call_event(mailbox: Mailbox, item: Done, spec: ts.TaskSpec) -> dict[str, str]:
    error = None
    if item.error_frames is not None:
        try:
            error = mailbox.rt.serializer.loads(item.error_frames)
        except Exception as exc:  # noqa: BLE001 - still a failure, described
            error = exc
    return task_events.of_spec(
        spec,
        task_type="ACTOR_TASK",
        where=(mailbox.ex.node_id, mailbox.ex.worker_id),
        actor_id=mailbox.actor_id,
        start_ms=item.started_ms,
        error=error,
    )


def entries(reply: Any) -> list[Entry]:
    """Entries of a raw XREADGROUP reply (a Batch does not parse replies); an
    entry deleted while pending has no fields."""
    if not reply:
        return []
    out = []
    for entry_id, flat in reply[0][1]:
        flat = flat or []
        out.append((bytes(entry_id), {bytes(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}))
    return out
