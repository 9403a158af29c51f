"""Network faults between redray processes and Redis, injected by a TCP proxy
(tests/faultproxy.py) that stands between one process and the real server: a
reply lost after the server ran the command, connections reset at random, a
connection black-holed. Each test proves the delivery guarantee at the level a
user sees it: every result right, no task or actor call run twice or out of
order, no ConnectionError for a blip, every blocking call bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import free_cpus, settings_via, wait_for

import redray
from redray.constants import Keys
from redray.exceptions import GetTimeoutError, RayActorError
from redray.util.queue import Empty, Queue


@redray.remote
def logged(i: int, log_dir: str, seconds: float = 0.0) -> int:
    with open(os.path.join(log_dir, f"runs-{os.getpid()}"), "a") as f:
        f.write(f"{i}\n")
    time.sleep(seconds)
    return 10 * i


@redray.remote
def sleep_then(seconds: float, value: int) -> int:
    time.sleep(seconds)
    return value


@redray.remote
class Recorder:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def add(self, i: int) -> int:
        self.seen.append(i)
        return i

    def calls(self) -> list[int]:
        return list(self.seen)

    def pause(self, seconds: float) -> None:
        time.sleep(seconds)


def runs(log_dir: Path) -> list[int]:
    out: list[int] = []
    for path in log_dir.glob("runs-*"):
        out.extend(int(line) for line in path.read_text().split())
    return sorted(out)


@pytest.fixture
def driver_proxy(settings, proxy_factory):
    """A driver whose every connection goes through a proxy (nodes connect directly)."""
    proxy = proxy_factory()
    redray.init(address=settings_via(settings, proxy).to_url())
    yield proxy
    redray.shutdown()


# -- a reply lost after the server ran the command ------------------------------------------


def test_a_lost_reply_to_a_notice_pop_does_not_hang_get(
    settings, node_factory, driver_proxy, redis_client
):
    node_factory(num_cpus=2)
    ref = sleep_then.remote(0.2, 3)
    redray.get(sleep_then.remote(0, 0), timeout=30)  # submitted, and the pipes are warm
    inbox = Keys().inbox(redray.get_runtime_context().get_worker_id())
    wait_for(lambda: redis_client.llen(inbox) > 0, what="the notice in the inbox")
    driver_proxy.drop_next_reply(b"BLPOP")
    # the pop takes the notice and its reply never arrives: the waiter
    # re-checks the object itself
    assert redray.get(ref, timeout=30) == 3
    assert driver_proxy.stats.replies_dropped == 1
    assert redis_client.llen(inbox) == 0


def _get_polling(ref: redray.ObjectRef, tries: int) -> object:
    """``get(ref, timeout=1)`` until it returns, as a user's polling loop does."""
    for _ in range(tries):
        try:
            return redray.get(ref, timeout=1)
        except GetTimeoutError:
            continue
    raise AssertionError(f"get(timeout=1) still timed out after {tries} tries")


def test_a_lost_notice_is_found_by_a_caller_polling_get_with_a_short_timeout(
    settings, node_factory, driver_proxy, redis_client
):
    node_factory(num_cpus=2)
    ref = sleep_then.remote(0.2, 3)
    redray.get(sleep_then.remote(0, 0), timeout=30)
    inbox = Keys().inbox(redray.get_runtime_context().get_worker_id())
    wait_for(lambda: redis_client.llen(inbox) > 0, what="the notice in the inbox")
    # the pop takes the notice and its reply is lost, and so is the reply to
    # the re-check that follows (as when Redis restarts): each later call is
    # one quiet slice that ends at its deadline, and must still re-check
    driver_proxy.drop_next_reply(b"BLPOP")
    driver_proxy.drop_next_reply(b"EXISTS")
    assert _get_polling(ref, tries=3) == 3
    assert driver_proxy.stats.replies_dropped == 2
    assert redis_client.llen(inbox) == 0


def test_a_notice_lost_in_the_pop_of_another_wait_is_found_by_the_next_get(
    settings, node_factory, driver_proxy, redis_client
):
    node_factory(num_cpus=2)
    first, second = sleep_then.remote(0, 1), sleep_then.remote(0, 2)
    inbox = Keys().inbox(redray.get_runtime_context().get_worker_id())
    wait_for(lambda: redis_client.llen(inbox) == 2, what="both notices in the inbox")
    # a wait for the second pops the first's notice, and the reply is lost
    driver_proxy.drop_next_reply(b"BLPOP")
    assert redray.get(second, timeout=30) == 2
    assert driver_proxy.stats.replies_dropped == 1
    # nobody waited for the first: the re-check after the lost read covered it
    assert redray.get(first, timeout=1) == 1


def _task_whose_notice_vanished(redis_client) -> redray.ObjectRef:
    ref = sleep_then.remote(0, 5)
    inbox = Keys().inbox(redray.get_runtime_context().get_worker_id())
    wait_for(lambda: redis_client.llen(inbox) == 1, what="the notice in the inbox")
    assert redis_client.lpop(inbox)  # gone without any failed read
    return ref


def test_a_vanished_notice_is_found_by_get_calls_with_short_timeouts(
    settings, node_factory, driver_proxy, redis_client
):
    node_factory(num_cpus=2)
    ref = _task_whose_notice_vanished(redis_client)
    # each call re-checks on its way out once none did for a slice (5 s)
    assert _get_polling(ref, tries=12) == 5


def test_a_vanished_notice_is_found_by_wait_calls_with_no_timeout(
    settings, node_factory, driver_proxy, redis_client
):
    node_factory(num_cpus=2)
    ref = _task_whose_notice_vanished(redis_client)
    deadline = time.monotonic() + 30
    while not redray.wait([ref], timeout=0)[0]:
        assert time.monotonic() < deadline, "wait(timeout=0) never found the object"
        time.sleep(0.1)
    assert redray.get(ref, timeout=0) == 5


def test_a_resent_submission_after_a_lost_reply_runs_each_task_once(
    settings, node_factory, driver_proxy, tmp_path
):
    node_factory(num_cpus=2)
    redray.get(sleep_then.remote(0, 0), timeout=30)
    driver_proxy.drop_next_reply(b"EVALSHA")
    # the tasks start at once; the lost reply makes the driver send the batch
    # again while they run: a running task must not be queued a second time
    refs = [logged.remote(i, str(tmp_path), 1.0) for i in range(4)]
    assert redray.get(refs, timeout=60) == [0, 10, 20, 30]
    assert driver_proxy.stats.replies_dropped == 1
    assert runs(tmp_path) == [0, 1, 2, 3]
    wait_for(lambda: redray.available_resources().get("CPU") == 2)


def test_a_resent_actor_call_after_a_lost_reply_runs_the_method_once(
    settings, node_factory, driver_proxy
):
    node_factory(num_cpus=2)
    recorder = Recorder.remote()
    assert redray.get(recorder.add.remote(-1), timeout=30) == -1
    driver_proxy.drop_next_reply(b"EVALSHA")
    refs = [recorder.add.remote(i) for i in range(5)]
    assert redray.get(refs, timeout=30) == list(range(5))
    assert driver_proxy.stats.replies_dropped == 1
    assert redray.get(recorder.calls.remote(), timeout=30) == [-1, 0, 1, 2, 3, 4]


def recorder_behind_a_proxy(settings, node_factory, connect, proxy_factory, first):
    """A node whose every connection goes through a fresh proxy, and a
    Recorder actor on it that has run ``add(first)``."""
    proxy = proxy_factory()
    node_factory(num_cpus=2, settings=settings_via(settings, proxy))
    connect()
    recorder = Recorder.remote()
    assert redray.get(recorder.add.remote(first), timeout=30) == first
    return proxy, recorder


def test_an_actor_reads_back_in_order_the_calls_a_lost_read_delivered(
    settings, node_factory, connect, proxy_factory
):
    proxy, recorder = recorder_behind_a_proxy(settings, node_factory, connect, proxy_factory, 0)
    # the actor's next read (sent with the result of call 1) delivers calls
    # 2 and 3, and its reply is lost
    proxy.drop_next_reply(b"XREADGROUP")
    assert redray.get(recorder.add.remote(1), timeout=30) == 1
    refs = [recorder.add.remote(2), recorder.add.remote(3)]
    wait_for(lambda: proxy.stats.replies_dropped == 1, what="the read's reply dropped")
    refs.append(recorder.add.remote(4))
    assert redray.get(refs, timeout=30) == [2, 3, 4]
    assert redray.get(recorder.calls.remote(), timeout=30) == [0, 1, 2, 3, 4]


#: what only the read an actor sends ahead (without BLOCK) has: COUNT 64 then STREAMS
READ_AHEAD = b"$2\r\n64\r\n$7\r\nSTREAMS"


def test_an_actor_reads_back_in_order_the_calls_a_lost_read_ahead_delivered(
    settings, node_factory, connect, proxy_factory
):
    proxy, recorder = recorder_behind_a_proxy(settings, node_factory, connect, proxy_factory, -1)
    # while the actor pauses, 500 calls queue up: its reads come back full,
    # so it reads ahead; the first such read's reply (and the results
    # published with it) is lost
    proxy.drop_next_reply(READ_AHEAD)
    paused = recorder.pause.remote(1.0)
    refs = [recorder.add.remote(i) for i in range(500)]
    assert redray.get(refs, timeout=60) == list(range(500))
    redray.get(paused, timeout=30)
    assert proxy.stats.replies_dropped == 1
    assert redray.get(recorder.calls.remote(), timeout=30) == [-1, *range(500)]


def test_actor_calls_run_once_in_order_while_the_actors_reads_lose_replies(
    settings, node_factory, connect, proxy_factory
):
    proxy, recorder = recorder_behind_a_proxy(settings, node_factory, connect, proxy_factory, -1)
    proxy.drop_replies_randomly(0.1, match=b"XREADGROUP", seed=11)
    try:
        refs = []
        for burst in range(4):
            refs.append(recorder.pause.remote(0.2))  # the calls behind it queue up
            refs += [recorder.add.remote(burst * 400 + i) for i in range(400)]
        assert redray.get(refs, timeout=120)[1:401] == list(range(400))
    finally:
        proxy.stop_dropping()
    assert proxy.stats.replies_dropped > 0
    assert redray.get(recorder.calls.remote(), timeout=30) == [-1, *range(1600)]


# -- connections reset at random --------------------------------------------------------------


def test_connection_resets_never_reach_user_code_and_nothing_runs_twice(
    settings, node_factory, driver_proxy, tmp_path
):
    node_factory(num_cpus=2)
    recorder = Recorder.remote()
    redray.get(recorder.calls.remote(), timeout=30)
    driver_proxy.reset_randomly(rate_per_s=4, seed=7)
    try:
        results, calls = [], []
        for burst in range(6):
            refs = [logged.remote(burst * 50 + i, str(tmp_path)) for i in range(50)]
            calls += [recorder.add.remote(burst * 10 + i) for i in range(10)]
            results += redray.get(refs, timeout=60)
        assert redray.get(calls, timeout=60) == list(range(60))
    finally:
        driver_proxy.stop_chaos()
    assert driver_proxy.stats.resets > 0
    assert results == [10 * i for i in range(300)]
    assert runs(tmp_path) == list(range(300))
    assert redray.get(recorder.calls.remote(), timeout=30) == list(range(60))


# -- black holes: every blocking call is bounded --------------------------------------------


def _black_holed_while_a_task_runs(node_factory, driver_proxy) -> redray.ObjectRef:
    node_factory(num_cpus=2)
    slow = sleep_then.remote(30, 1)
    redray.get(sleep_then.remote(0, 0), timeout=30)  # submitted
    driver_proxy.silence_current()
    driver_proxy.blackhole()
    return slow


def _heal_and_go_on(driver_proxy, slow: redray.ObjectRef) -> None:
    driver_proxy.heal()
    assert redray.get(sleep_then.remote(0, 5), timeout=30) == 5
    redray.cancel(slow, force=True)


def test_get_with_a_timeout_returns_in_time_on_a_black_holed_network(
    settings, node_factory, driver_proxy
):
    slow = _black_holed_while_a_task_runs(node_factory, driver_proxy)
    started = time.monotonic()
    with pytest.raises(GetTimeoutError):
        redray.get(slow, timeout=3)
    # bounded by the timeout, not blocked for good (the slack is for a noisy machine)
    assert time.monotonic() - started < 3 + 10
    _heal_and_go_on(driver_proxy, slow)


def test_wait_with_no_timeout_returns_in_time_on_a_black_holed_network(
    settings, node_factory, driver_proxy
):
    slow = _black_holed_while_a_task_runs(node_factory, driver_proxy)
    started = time.monotonic()
    assert redray.wait([slow], timeout=0) == ([], [slow])
    # its drain of the inbox gives up after the blocking reads' margin, not
    # after the client's 10 s socket timeout (the slack is for a noisy machine)
    assert time.monotonic() - started < 6
    _heal_and_go_on(driver_proxy, slow)


def test_queue_get_with_a_timeout_returns_in_time_on_a_black_holed_network(
    settings, node_factory, driver_proxy
):
    node_factory(num_cpus=1)
    queue = Queue()
    queue.put(1)
    assert queue.get(timeout=5) == 1
    driver_proxy.silence_current()
    driver_proxy.blackhole()
    started = time.monotonic()
    with pytest.raises(Empty):
        queue.get(timeout=2)
    # bounded by the timeout, not blocked for good (the slack is for a noisy machine)
    assert time.monotonic() - started < 2 + 10
    driver_proxy.heal()
    queue.put(2)
    assert queue.get(timeout=10) == 2


def test_an_actor_whose_mailbox_connection_goes_silent_serves_on(
    settings, node_factory, connect, proxy_factory
):
    proxy, recorder = recorder_behind_a_proxy(settings, node_factory, connect, proxy_factory, 0)
    # every connection the node and its processes hold now goes silent for
    # good; only new connections work
    proxy.silence_current()
    assert redray.get(recorder.add.remote(1), timeout=60) == 1
    assert redray.get(recorder.calls.remote(), timeout=30) == [0, 1]


def test_a_kill_requested_while_the_node_is_cut_off_still_reaches_it(
    settings, node_factory, connect, proxy_factory, redis_client
):
    proxy = proxy_factory()
    node = node_factory(
        num_cpus=2, settings=settings_via(settings, proxy), config={"node_timeout": 120}
    )
    connect()
    recorder = Recorder.options(num_cpus=1).remote()
    assert redray.get(recorder.add.remote(0), timeout=30) == 0
    assert free_cpus(redis_client, node.node_id) == 1.0
    proxy.blackhole()
    redray.kill(recorder)
    time.sleep(3)  # the node cannot hear it now
    proxy.heal()
    # the request waited in the node's control stream: the actor's CPU comes back
    wait_for(lambda: free_cpus(redis_client, node.node_id) == 2.0, timeout=60)
    with pytest.raises(RayActorError):
        redray.get(recorder.add.remote(1), timeout=30)
