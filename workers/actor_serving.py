"""The ways an actor serves its mailbox: one call at a time in mailbox order
(a sync actor), or calls at once on their concurrency groups' threads (a
threaded actor: ``max_concurrency`` or ``concurrency_groups``) or event loops
(an async actor). Each returns when the executor stops, and raises Terminate
once a call asked the actor to end.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from redray import task_spec as ts

from . import concurrency_groups as cg
from .actor_calls import Actor
from .actor_late_publish import LatePublisher
from .actor_mailbox import READ_COUNT, Done, Entry, MailboxGone, Terminate

#: calls a concurrent actor reads ahead of their results, at least
MAX_IN_FLIGHT = 10_000


def serve(actor: Actor) -> None:
    # calls delivered before an outage but never answered come first
    actor.mailbox.reread = True
    extra = actor.extra
    if extra.get("is_async"):
        serve_async(actor)
    elif (extra.get("max_concurrency") or 1) > 1 or extra.get("concurrency_groups"):
        serve_threaded(actor)
    else:
        serve_in_order(actor)


def serve_in_order(actor: Actor) -> None:
    """One call at a time, in mailbox order; results go out with the next
    read, or before it if a later call of the same read runs long.

    A read cut short by its COUNT leaves more entries waiting. Then the
    next read goes out before the calls run, without blocking and together
    with the publish of the calls before, and its reply is collected after
    they ran: Redis publishes and reads while the actor works (10k calls:
    the round trip took 65% of the actor's time)."""
    mailbox = actor.mailbox
    late = LatePublisher(mailbox)
    try:
        entries = mailbox.read()
        #: the previous read's results, published with the read ahead
        published: list[Done] = []
        while True:
            ahead = None
            if published or len(entries) >= READ_COUNT:
                ahead = mailbox.send_ahead(published)
            for entry_id, fields in entries:
                if actor.terminating:
                    break  # none after __ray_terminate__
                late.starting()
                late.finished(actor.execute(entry_id, fields))
            done = late.take()
            following: list[Entry] = []
            if ahead is not None:
                try:
                    following = mailbox.collect_ahead(ahead, published)
                except MailboxGone:
                    mailbox.publish(done)
                    raise
            published = []
            if actor.ex.stopping:
                if done:
                    mailbox.publish(done)
                return
            if following and not any(d.terminate for d in done):
                published, entries = done, following
                continue
            entries = mailbox.publish_and_read(done) if done else mailbox.read()
    finally:
        late.close()


def serve_threaded(actor: Actor) -> None:
    """Calls run at once on each concurrency group's threads."""
    groups = cg.ThreadGroups(cg.group_sizes(actor.extra))
    stop = threading.Event()

    def run_one(entry_id: bytes, spec: ts.TaskSpec) -> None:
        if actor.terminating:
            return  # left in the mailbox: finalize() fails it
        try:
            actor.mailbox.publish([actor.execute_spec(entry_id, spec)])
        except Terminate:
            stop.set()

    try:
        _dispatch(actor, stop, lambda e, spec, g: groups.submit(g, run_one, e, spec))
    finally:
        groups.shutdown()
    if stop.is_set():
        raise Terminate


def serve_async(actor: Actor) -> None:
    """Coroutines run at once on each concurrency group's event loop."""
    groups = cg.LoopGroups(cg.group_sizes(actor.extra))
    io = ThreadPoolExecutor(4, thread_name_prefix="redray-actor-io")
    stop, ended = threading.Event(), threading.Event()

    async def handle(entry_id: bytes, spec: ts.TaskSpec) -> None:
        item = await actor.execute_async(entry_id, spec, io)
        if item is None:
            actor.mailbox.running.discard(entry_id)
            return
        try:
            await asyncio.get_running_loop().run_in_executor(io, actor.mailbox.publish, [item])
        except Terminate:
            stop.set()

    def listen() -> None:
        # cancel() of a running coroutine must not wait for the next read
        while not ended.is_set():
            actor.cancels.poll(timeout=0.5)

    threading.Thread(target=listen, name="redray-actor-cancel", daemon=True).start()
    try:
        _dispatch(actor, stop, lambda e, spec, g: groups.submit(g, handle(e, spec)))
    finally:
        groups.shutdown()
        ended.set()
        io.shutdown(wait=False)
    if stop.is_set():
        raise Terminate


def _dispatch(
    actor: Actor,
    stop: threading.Event,
    submit: Callable[[bytes, ts.TaskSpec, str], Future[Any]],
) -> None:
    """Read calls and hand each to ``submit(entry_id, spec, group)`` (its
    concurrency group runs it) until the actor stops or terminates.

    At most MAX_IN_FLIGHT calls are read ahead of their results; a group
    with a backlog that large holds up the others' unread calls."""
    mailbox = actor.mailbox
    sizes = cg.group_sizes(actor.extra)
    cls = type(actor.instance)
    in_flight = threading.Semaphore(max(MAX_IN_FLIGHT, 2 * sum(sizes.values())))

    def done(_: Any) -> None:
        in_flight.release()

    while not actor.ex.stopping and not stop.is_set():
        for entry_id, fields in mailbox.read():
            spec = mailbox.decode(entry_id, fields)
            if spec is None:
                mailbox.publish([Done(entry_id, None, [])])
                continue
            in_flight.acquire()
            mailbox.running.add(entry_id)
            submit(entry_id, spec, cg.group_of(cls, spec, sizes)).add_done_callback(done)
