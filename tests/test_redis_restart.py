"""kill -9 of the Redis server (AOF, appendfsync always) mid-workload, then a
restart: no submitted task and no finished result is lost."""

from __future__ import annotations

import time
import warnings

import pytest
from conftest import start_node

import redray
from redray.settings import Settings


@redray.remote
def slow_identity(i: int) -> int:
    time.sleep(0.05)
    return i


@redray.remote
class Tally:
    def __init__(self) -> None:
        self.total = 0

    def add(self, x: int) -> int:
        self.total += x
        return self.total


def test_tasks_survive_a_redis_kill_and_restart(persistent):
    settings = Settings(host="127.0.0.1", port=persistent.port)
    node = start_node(settings, num_cpus=2)
    try:
        redray.init(address=settings.to_url())
        refs = [slow_identity.remote(i) for i in range(80)]
        assert redray.get(refs[0], timeout=30) == 0
        persistent.kill()
        time.sleep(1.0)
        persistent.start()
        assert redray.get(refs, timeout=90) == list(range(80))
        redray.shutdown()
    finally:
        node.stop()


def test_actor_mailbox_survives_a_redis_kill_and_restart(persistent):
    settings = Settings(host="127.0.0.1", port=persistent.port)
    node = start_node(settings, num_cpus=2)
    try:
        redray.init(address=settings.to_url())
        tally = Tally.remote()
        assert redray.get(tally.add.remote(1), timeout=30) == 1
        persistent.kill()
        time.sleep(1.0)
        persistent.start()
        refs = [tally.add.remote(1) for _ in range(5)]
        assert redray.get(refs, timeout=90) == [2, 3, 4, 5, 6]
        redray.shutdown()
    finally:
        node.stop()


def test_get_while_redis_is_down_raises_connection_error(persistent):
    settings = Settings(host="127.0.0.1", port=persistent.port)
    node = start_node(settings, num_cpus=1)
    try:
        redray.init(address=settings.to_url())
        ref = slow_identity.remote(1)
        assert redray.get(ref, timeout=30) == 1
        persistent.kill()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ConnectionError, match=str(persistent.port)):
                redray.get(slow_identity.remote(2), timeout=60)
        persistent.start()
        redray.shutdown()
    finally:
        node.stop()


def test_remote_while_redis_is_down_raises_connection_error_and_loses_no_submission(persistent):
    settings = Settings(host="127.0.0.1", port=persistent.port)
    node = start_node(settings, num_cpus=1)
    try:
        redray.init(address=settings.to_url())
        assert redray.get(slow_identity.remote(0), timeout=30) == 0
        persistent.kill()
        submitted = []
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # bounded: redis-py's retries (about 5 s), never a hang
            with pytest.raises(ConnectionError, match=str(persistent.port)):
                while time.monotonic() - started < 60:
                    submitted.append(slow_identity.remote(len(submitted) + 1))
                    time.sleep(0.1)
        assert submitted, "the first .remote() calls are buffered, not refused"
        persistent.start()
        # what .remote() accepted before the error still runs once Redis is back
        expected = list(range(1, len(submitted) + 1))
        assert redray.get(submitted, timeout=90) == expected
        redray.shutdown()
    finally:
        node.stop()
