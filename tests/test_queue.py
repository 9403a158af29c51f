"""``redray.util.queue.Queue``: Ray's async, batch and shutdown surface, against
a real server and real worker processes (the basic queue is in test_util.py)."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time

import pytest
from conftest import malicious_pickle, wait_for

import redray
import redray.util.queue as rq
from redray.constants import Keys
from redray.exceptions import ActorDiedError, RaySystemError
from redray.util.queue import Empty, Full, Queue


@redray.remote
class AsyncQueueUser:
    def __init__(self, q) -> None:
        self.q = q

    async def take(self, timeout: float) -> object:
        return await self.q.get_async(timeout=timeout)

    async def give(self, item) -> None:
        await self.q.put_async(item)

    async def ping(self) -> str:
        return "pong"


@redray.remote
def batches_that_never_fit(q, started, seconds: float) -> int:
    started.put("running")
    refused = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            q.put_nowait_batch([1, 2, 3])
        except Full:
            refused += 1
    return refused


@redray.remote
def get_forever(q, started) -> object:
    started.put("waiting")
    return q.get()


@redray.remote
def put_one(q) -> None:
    q.put("late")


def free_slots(redis_client, settings, q: Queue) -> int:
    return int(redis_client.llen(Keys(settings.prefix).queue_free(q.queue_id)))


# -- async ------------------------------------------------------------------------------------


def test_put_async_and_get_async_from_asyncio_driver_code(cluster):
    q = Queue(maxsize=2)

    async def main() -> list:
        await q.put_async("a")
        await q.put_async("b", timeout=5)
        return [await q.get_async(), await q.get_async(timeout=5)]

    assert asyncio.run(main()) == ["a", "b"]
    assert q.empty()


def test_get_async_in_an_async_actor_leaves_its_event_loop_free_while_it_waits(cluster):
    q = Queue()
    user = AsyncQueueUser.remote(q)
    taken = user.take.remote(30)
    # the actor answers another call while take waits in Redis
    assert redray.get(user.ping.remote(), timeout=20) == "pong"
    ready, _ = redray.wait([taken], timeout=0)
    assert not ready
    q.put("for-the-actor")
    assert redray.get(taken, timeout=20) == "for-the-actor"


def test_put_async_from_an_async_actor_reaches_the_driver(cluster):
    q = Queue()
    user = AsyncQueueUser.remote(q)
    redray.get(user.give.remote({"from": "actor"}), timeout=20)
    assert q.get(timeout=20) == {"from": "actor"}


def test_get_async_with_a_timeout_on_an_empty_queue_raises_empty(cluster):
    q = Queue()
    started = time.monotonic()
    with pytest.raises(Empty):
        asyncio.run(q.get_async(timeout=0.3))
    assert 0.25 <= time.monotonic() - started < 3


def test_put_async_with_a_timeout_on_a_full_queue_raises_full(cluster):
    q = Queue(maxsize=1)
    q.put("only")
    with pytest.raises(Full):
        asyncio.run(q.put_async("more", timeout=0.3))
    assert q.size() == 1


def test_get_async_without_blocking_on_an_empty_queue_raises_empty(cluster):
    q = Queue()
    with pytest.raises(Empty):
        asyncio.run(q.get_async(block=False))


def test_put_async_without_blocking_on_a_full_queue_raises_full(cluster):
    q = Queue(maxsize=1)
    q.put("only")
    with pytest.raises(Full):
        asyncio.run(q.put_async("more", block=False))


def test_async_calls_with_a_negative_timeout_are_a_value_error(cluster):
    q = Queue()
    with pytest.raises(ValueError, match="non-negative"):
        asyncio.run(q.get_async(timeout=-1))
    with pytest.raises(ValueError, match="non-negative"):
        asyncio.run(q.put_async(1, timeout=-1))


def test_a_cancelled_get_async_loses_no_item(cluster, settings, redis_client):
    q = Queue(maxsize=2)

    async def main() -> object:
        waiting = asyncio.ensure_future(q.get_async())
        await asyncio.sleep(0.3)
        waiting.cancel()
        # the cancelled call's thread may still take this item: it must come back
        await asyncio.to_thread(q.put, "kept")
        return await q.get_async(timeout=10)

    assert asyncio.run(main()) == "kept"
    assert q.empty()
    wait_for(lambda: free_slots(redis_client, settings, q) == 2, what="both slots free")


def test_a_cancelled_put_async_waiting_for_a_slot_puts_nothing(cluster, settings, redis_client):
    q = Queue(maxsize=1)
    q.put("first")

    async def main() -> None:
        waiting = asyncio.ensure_future(q.put_async("cancelled"))
        await asyncio.sleep(0.3)
        waiting.cancel()
        # the slot this frees may reach the cancelled call's thread: it gives it back
        assert await q.get_async(timeout=10) == "first"

    asyncio.run(main())
    wait_for(lambda: free_slots(redis_client, settings, q) == 1, what="the slot given back")
    with pytest.raises(Empty):
        q.get_nowait()


# -- batches ----------------------------------------------------------------------------------


def test_a_batch_that_does_not_fit_never_takes_a_slot_even_for_a_moment(cluster):
    q, started = Queue(maxsize=2), Queue()
    batches = batches_that_never_fit.remote(q, started, 3.0)
    assert started.get(timeout=30) == "running"
    refused = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        # the queue is empty but for this item: a put always fits
        try:
            q.put_nowait("x")
        except Full:
            refused += 1
            continue
        assert q.get_nowait() == "x"
    assert refused == 0
    assert redray.get(batches, timeout=30) > 0


def test_put_nowait_batch_that_does_not_fit_says_why_in_rays_words(cluster):
    q = Queue(maxsize=3)
    q.put(0)
    with pytest.raises(Full, match=r"^Cannot add 3 items to queue of size 1 and maxsize 3\.$"):
        q.put_nowait_batch([1, 2, 3])
    assert q.size() == 1


def test_get_nowait_batch_of_more_than_it_holds_says_why_in_rays_words(cluster):
    q = Queue()
    q.put_nowait_batch([1, 2])
    with pytest.raises(Empty, match=r"^Cannot get 3 items from queue of size 2\.$"):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [1, 2]


def test_put_nowait_batch_of_a_non_iterable_is_a_type_error(cluster):
    q = Queue()
    with pytest.raises(TypeError, match="Argument 'items' must be an Iterable"):
        q.put_nowait_batch(5)


def test_get_nowait_batch_of_a_non_int_is_a_type_error(cluster):
    q = Queue()
    q.put(1)
    with pytest.raises(TypeError, match="Argument 'num_items' must be an int"):
        q.get_nowait_batch(1.0)
    assert q.size() == 1


def test_a_forged_item_in_a_batch_leaves_the_queue_its_maxsize(signed, settings, redis_client):
    q = Queue(maxsize=3)
    q.put("a")
    redis_client.rpush(Keys(settings.prefix).queue(q.queue_id), b"unsigned")
    q.put("b")
    with pytest.raises(RaySystemError, match="signature check"):
        q.get_nowait_batch(3)
    # the genuine items are back in order, and the queue still holds at most 3
    assert q.get_nowait_batch(2) == ["a", "b"]
    q.put_nowait_batch([1, 2, 3])
    with pytest.raises(Full):
        q.put_nowait(4)


def test_get_async_never_unpickles_a_forged_item(signed, settings, redis_client, tmp_path):
    marker = tmp_path / "pwned"
    keys = Keys(settings.prefix)
    q = Queue()
    redis_client.rpush(keys.queue(q.queue_id), malicious_pickle(marker))
    with pytest.raises(RaySystemError, match="signature check"):
        asyncio.run(q.get_async(timeout=10))
    assert not marker.exists()
    entries = redis_client.xrange(keys.dead_letters)
    assert any(e[1][b"source"] == keys.queue(q.queue_id).encode() for e in entries)


# -- timeouts ---------------------------------------------------------------------------------


def test_get_with_a_zero_timeout_takes_an_item_that_is_there(cluster):
    q = Queue()
    q.put("here")
    assert q.get(timeout=0) == "here"


def test_put_with_a_zero_timeout_goes_in_when_there_is_room(cluster):
    q = Queue(maxsize=1)
    q.put("in", timeout=0)
    assert q.get_nowait() == "in"


def test_a_non_blocking_call_ignores_its_timeout_as_in_ray(cluster):
    q = Queue()
    q.put("x", block=False, timeout=-1)
    assert q.get(block=False, timeout=-1) == "x"


# -- shutdown ---------------------------------------------------------------------------------


def test_shutdown_deletes_the_queues_keys_and_takes_them_out_of_the_jobs_key_set(
    cluster, settings, redis_client
):
    keys = Keys(settings.prefix)
    q = Queue(maxsize=2)
    q.put("item")
    job_keys = keys.job_keys(redray.api.current_runtime().job_id)
    mine = {k.decode() for k in redis_client.scan_iter(match=keys.queue(q.queue_id) + "*")}
    assert mine and mine <= {k.decode() for k in redis_client.smembers(job_keys)}
    q.shutdown()
    assert not list(redis_client.scan_iter(match=keys.queue(q.queue_id) + "*"))
    assert not mine & {k.decode() for k in redis_client.smembers(job_keys)}


def test_a_shut_down_queue_refuses_every_call(cluster):
    q = Queue(maxsize=2)
    q.put("item")
    q.shutdown()
    calls = [
        lambda: q.put("more"),
        lambda: q.put_nowait_batch(["more"]),
        q.get_nowait,
        lambda: q.get(timeout=1),
        lambda: q.get_nowait_batch(1),
        q.size,
        lambda: asyncio.run(q.get_async()),
        lambda: asyncio.run(q.put_async("more")),
    ]
    for call in calls:
        with pytest.raises(rq.QueueShutdownError, match="was shut down"):
            call()


def test_queue_shutdown_error_is_an_actor_died_error_as_in_ray():
    assert issubclass(rq.QueueShutdownError, ActorDiedError)


def test_a_task_holding_a_shut_down_queue_gets_queue_shutdown_error(cluster):
    q = Queue()
    copy = pickle.loads(pickle.dumps(q))
    q.shutdown()
    with pytest.raises(rq.QueueShutdownError):
        redray.get(put_one.remote(copy), timeout=30)
    with pytest.raises(rq.QueueShutdownError):
        copy.get_nowait()


def test_a_get_blocked_in_another_process_fails_once_the_queue_is_shut_down(cluster):
    q, started = Queue(), Queue()
    blocked = get_forever.remote(q, started)
    assert started.get(timeout=30) == "waiting"
    time.sleep(0.3)
    q.shutdown()
    with pytest.raises(rq.QueueShutdownError):
        redray.get(blocked, timeout=20)


def test_a_graceful_shutdown_lets_a_call_in_flight_finish(cluster):
    q = Queue()
    got: list = []
    getter = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    getter.start()
    time.sleep(0.3)
    stopper = threading.Thread(target=q.shutdown, kwargs={"grace_period_s": 30})
    stopper.start()
    time.sleep(0.5)
    assert stopper.is_alive()
    pickle.loads(pickle.dumps(q)).put("last")  # another handle of the same queue
    getter.join(10)
    stopper.join(10)
    assert got == ["last"]
    assert not stopper.is_alive()


def test_a_graceful_shutdown_stops_waiting_after_its_grace_period(cluster):
    q = Queue()
    failed: list = []

    def get() -> None:
        try:
            q.get()
        except rq.QueueShutdownError as exc:
            failed.append(exc)

    getter = threading.Thread(target=get, daemon=True)
    getter.start()
    time.sleep(0.3)
    started = time.monotonic()
    q.shutdown(grace_period_s=1)
    assert 0.9 <= time.monotonic() - started < 3
    getter.join(15)
    assert len(failed) == 1


# -- actor ------------------------------------------------------------------------------------


def test_the_actor_attribute_says_the_queue_has_no_actor(cluster):
    q = Queue()
    with pytest.raises(AttributeError, match="has no actor"):
        q.actor.qsize.remote()
