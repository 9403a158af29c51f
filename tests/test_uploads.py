"""Large ``put``: a private copy in the process at once, the upload to Redis in
the background. Against a real server and real nodes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis
from conftest import wait_for

import redray
from redray.api import current_runtime
from redray.constants import Keys
from redray.exceptions import ObjectStoreFullError

MiB = 1024 * 1024


@redray.remote
def total(a) -> float:
    return float(a.sum())


@redray.remote
def put_inside(n: int) -> list:
    return [redray.put(np.full(n, 7.0))]


def test_large_put_is_read_back_in_the_process_without_redis(cluster):
    big = np.arange(4 * MiB, dtype=np.float64)
    ref = redray.put(big)
    back = redray.get(ref)
    assert np.array_equal(back, big) and not back.flags.writeable


def test_changing_the_array_after_put_changes_no_copy_of_the_object(cluster):
    big = np.ones(2 * MiB)
    ref = redray.put(big)
    big[:] = 5.0  # after put: neither the local nor the Redis copy may see it
    assert redray.get(ref).sum() == 2 * MiB
    assert redray.get(total.remote(ref), timeout=30) == 2 * MiB


def test_task_submitted_right_after_put_waits_for_the_upload(cluster):
    refs = [redray.put(np.full(3 * MiB, float(i))) for i in range(4)]
    sums = redray.get([total.remote(r) for r in refs], timeout=60)
    assert sums == [float(i) * 3 * MiB for i in range(4)]


@redray.remote
def total_of_first(arrays: list) -> float:
    return float(redray.get(arrays[0]).sum())


@redray.remote
class Summer:
    def total(self, a) -> float:
        return float(a.sum())


@pytest.fixture
def long_upload_delay(monkeypatch):
    """Uploads wait a minute unless something expedites them: a test that
    needs an upload and gets it in time proves that something did."""
    monkeypatch.setattr("redray.uploader.DELAY", 60.0)


def test_a_put_waits_before_its_upload_and_one_dropped_meanwhile_is_never_sent(
    cluster, redis_client, long_upload_delay
):
    up = current_runtime().uploader
    sent: list[str] = []
    publish = up._publish
    up._publish = lambda oid, *rest: (sent.append(oid), publish(oid, *rest))[1]
    try:
        ref = redray.put(np.zeros(4 * MiB))
        oid = ref.hex()
        time.sleep(0.5)
        assert sent == [] and oid in up.local  # waiting: read here from the local copy
        del ref
        redray.put(np.zeros(4 * MiB))  # a large put frees what was dropped first
        assert oid not in up.local
        assert up.wait_idle(timeout=30)
    finally:
        up._publish = publish
    assert oid not in sent
    assert not redis_client.exists(Keys().obj(oid)) and not redis_client.exists(
        Keys().staged(oid, "u")
    )


def test_a_put_a_task_takes_is_uploaded_at_once(cluster, long_upload_delay):
    ref = redray.put(np.full(2 * MiB, 2.0))
    assert redray.get(total.remote(ref), timeout=30) == 4.0 * MiB


def test_a_put_nested_in_an_argument_is_uploaded_at_once(cluster, long_upload_delay):
    ref = redray.put(np.full(2 * MiB, 3.0))
    assert redray.get(total_of_first.remote([ref]), timeout=30) == 6.0 * MiB


def test_a_put_an_actor_call_takes_is_uploaded_at_once(cluster, long_upload_delay):
    summer = Summer.remote()
    redray.get(summer.total.remote(np.ones(1)), timeout=30)  # the actor is up
    ref = redray.put(np.full(2 * MiB, 5.0))
    assert redray.get(summer.total.remote(ref), timeout=30) == 10.0 * MiB


def test_waiting_for_the_uploads_sends_them_at_once(cluster, redis_client, long_upload_delay):
    ref = redray.put(np.zeros(2 * MiB))
    assert current_runtime().uploader.wait_idle(timeout=30)
    assert redis_client.exists(Keys().obj(ref.hex()))


def test_uploaded_object_exists_in_redis(cluster, redis_client):
    ref = redray.put(np.zeros(2 * MiB))
    rt = current_runtime()
    assert rt.uploader.wait_idle(timeout=30)
    assert redis_client.exists(Keys().obj(ref.hex()))


def test_object_dropped_before_its_upload_leaves_nothing(cluster, redis_client):
    rt = current_runtime()
    oids = []
    for _ in range(5):
        ref = redray.put(np.zeros(8 * MiB))
        oids.append(ref.hex())
        del ref
    rt.uploader.wait_idle(timeout=30)
    keys = Keys()  # the flusher frees them within a housekeeping round
    wait_for(lambda: not any(redis_client.exists(keys.obj(o)) for o in oids))
    assert not any(redis_client.exists(keys.staged(o, "u")) for o in oids)


def test_a_task_result_naming_a_put_object_arrives_after_the_object(cluster, redis_client):
    [inner] = redray.get(put_inside.remote(2 * MiB), timeout=30)
    # the executor settles its uploads before publishing its result
    assert redis_client.exists(Keys().obj(inner.hex()))
    assert redray.get(inner).sum() == 7.0 * 2 * MiB


def test_an_object_redis_refuses_becomes_object_store_full_for_other_readers(cluster, monkeypatch):
    def refuse(key, fields):
        raise redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr(current_runtime().uploader._bulk, "hset", refuse)
    ref = redray.put(np.ones(2 * MiB))
    assert redray.get(ref).sum() == 2 * MiB  # this process keeps its copy
    with pytest.raises(ObjectStoreFullError, match="maxmemory"):
        redray.get(total.remote(ref), timeout=30)


def test_shutdown_with_uploads_pending_leaves_no_key(settings, node_factory, redis_client):
    node_factory(num_cpus=1)
    baseline = set(redis_client.keys("*"))
    redray.init(address=settings.to_url())
    refs = [redray.put(np.zeros(8 * MiB)) for _ in range(4)]
    redray.shutdown()
    allowed = {Keys().job_counter.encode()}
    wait_for(lambda: set(redis_client.keys("*")) - baseline - allowed == set())
    del refs


def test_a_small_put_redis_refuses_raises_object_store_full(cluster, redis_client):
    before = redis_client.config_get("maxmemory*")
    redis_client.config_set("maxmemory-policy", "noeviction")
    redis_client.config_set("maxmemory", 1)  # every write is refused
    try:
        with pytest.raises(ObjectStoreFullError, match="maxmemory"):
            redray.put(b"x" * 100)
    finally:
        redis_client.config_set("maxmemory", before["maxmemory"])
        redis_client.config_set("maxmemory-policy", before["maxmemory-policy"])
    ref = redray.put(b"y" * 100)  # nothing stuck: the next put works
    assert redray.get(ref) == b"y" * 100


def test_a_put_dropped_while_it_uploads_is_given_up_and_leaves_no_key(cluster, redis_client):
    up = current_runtime().uploader
    asked = up._bulk.abort_if
    dropped: list[str] = []

    def drop_during_the_write() -> bool:
        # the last ObjectRef goes while the first slice is about to be sent
        if not dropped and up._current is not None:
            dropped.append(up._current)
            up.drop(up._current)
        return asked()

    up._bulk.abort_if = drop_during_the_write
    try:
        oid = redray.put(np.ones(2 * MiB)).hex()
        assert up.wait_idle(timeout=30)
    finally:
        up._bulk.abort_if = asked
    assert dropped == [oid]
    assert up._bulk._sock is None  # given up: the half-sent command's connection closed
    keys = Keys()
    job_keys = keys.job_keys(current_runtime().job_id)
    gone = [keys.obj(oid), keys.done(oid), keys.staged(oid, "u")]
    assert not any(redis_client.exists(k) for k in gone)
    assert not any(redis_client.sismember(job_keys, k) for k in gone)
    # the channel reconnects for the next upload
    again = redray.put(np.full(2 * MiB, 3.0))
    assert up.wait_idle(timeout=30)
    assert redray.get(total.remote(again), timeout=30) == 6.0 * MiB


def test_a_signed_put_dropped_while_it_is_hashed_stops_hashing_and_leaves_no_key(
    signed, redis_client, monkeypatch
):
    from redray.signing import Signer

    up = current_runtime().uploader
    asked = up._bulk.abort_if
    checks: list[bool] = []
    tag = Signer.tag

    def spy(self, role, binding, parts, check=None):
        def counted() -> None:
            checks.append(True)
            if len(checks) == 2:  # the last ObjectRef goes after the first slice
                up.drop(up._current)
            check()

        return tag(self, role, binding, parts, counted if check else None)

    monkeypatch.setattr(Signer, "tag", spy)
    oid = redray.put(np.ones(8 * MiB)).hex()  # 64 MiB: eight slices to hash
    assert up.wait_idle(timeout=30)
    assert len(checks) == 2  # given up before the second slice was hashed
    assert up._bulk._sock is None  # and nothing was sent
    keys = Keys()
    assert not any(
        redis_client.exists(k) for k in (keys.obj(oid), keys.done(oid), keys.staged(oid, "u"))
    )
    up._bulk.abort_if = asked
    again = redray.put(np.full(2 * MiB, 3.0))  # the next upload is hashed and sent whole
    assert redray.get(total.remote(again), timeout=30) == 6.0 * MiB


def test_a_bulk_write_given_up_stores_nothing_and_the_channel_recovers(settings, redis_client):
    from redray.bulk import Aborted, BulkChannel

    bulk = BulkChannel(settings)
    calls = iter([False, True])  # the first slice goes, the second is given up
    bulk.abort_if = lambda: next(calls, False)
    try:
        with pytest.raises(Aborted):
            bulk.hset("{redray}:test:bulk", {"d": b"x" * (20 * MiB)})
        assert not redis_client.exists("{redray}:test:bulk")
        assert redis_client.ping()  # the server dropped the half-sent command, nothing else
        bulk.hset("{redray}:test:bulk", {"d": b"y" * (9 * MiB)})
        assert redis_client.hstrlen("{redray}:test:bulk", "d") == 9 * MiB
    finally:
        redis_client.delete("{redray}:test:bulk")
        bulk.close()
