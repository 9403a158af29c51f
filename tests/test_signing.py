"""Signed payloads: with a cluster secret, nothing reaches ``pickle.loads``
that the cluster did not sign. Each attack below writes a malicious pickle
(opening a marker file when unpickled) where redray would unpickle it; the
marker must never appear, the owner gets a clear error, no process dies."""

from __future__ import annotations

import hmac
import os
import pickle
import struct
import time

import pytest
from conftest import CLUSTER_SECRET, malicious_pickle, wait_for

import redray
from redray import ids
from redray.constants import Keys
from redray.serialization import KIND_VALUE, decode_record, encode_record, pack
from redray.signing import OBJECT, SPEC, SignatureError, Signer
from redray.util.queue import Queue

SECRET = CLUSTER_SECRET


def malicious_record(path) -> bytes:
    return KIND_VALUE + pack([malicious_pickle(path)])


# -- the envelope (no server) ----------------------------------------------------------


def test_a_sealed_value_opens_to_its_payload():
    signer = Signer(SECRET, "p")
    assert bytes(signer.open(SPEC, "t1", signer.seal(SPEC, "t1", b"payload"))) == b"payload"


def reference_tag(head: bytes, payload: bytes) -> bytes:
    """The HMAC-SHA256 of (head, payload) as role "spec", binding "t1", for
    Signer("secret", "redray"), computed by the hmac module from the format."""
    key = hmac.new(b"secret", b"redray-sign-v1|redray", "sha256").digest()
    length = struct.Struct("<Q").pack
    message = b"spec\0t1\0" + length(len(head)) + head + length(len(payload)) + payload
    return hmac.new(key, message, "sha256").digest()


@pytest.mark.parametrize("size", [0, 300, 65_535, 65_536, 1 << 20])
@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray])
def test_the_tag_is_hmac_sha256_for_small_and_large_values(size, wrap):
    # small values are hashed by CPython's own SHA-256, large ones by
    # OpenSSL's: the tag must be the same HMAC-SHA256 either way
    signer = Signer("secret", "redray")
    payload = os.urandom(size)
    assert signer.tag(b"spec", "t1", (b"hh", wrap(payload))) == reference_tag(b"hh", payload)


@pytest.mark.parametrize("size", [0, 300, 65_535, 65_536, 1 << 20])
@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray])
def test_a_sealed_value_carries_its_hmac_sha256_and_opens_from_any_buffer(size, wrap):
    # seal and open take a shorter way for small values than tag(): the
    # envelope must carry the same HMAC-SHA256 and open from any buffer
    signer = Signer("secret", "redray")
    payload = os.urandom(size)
    sealed = signer.seal(SPEC, "t1", payload, b"hint")
    assert sealed[2:34] == reference_tag(struct.pack("<H", 4) + b"hint", payload)
    assert bytes(signer.open(SPEC, "t1", wrap(sealed))) == payload


@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray])
def test_a_value_with_a_long_hint_opens_to_its_payload(wrap):
    # the hint's length is two bytes, little-endian: past 255 both count
    signer = Signer(SECRET, "p")
    sealed = signer.seal(SPEC, "t1", b"payload", b"h" * 300)
    assert bytes(signer.open(SPEC, "t1", wrap(sealed))) == b"payload"


@pytest.mark.parametrize("hint", [b"", b"hint", b"h" * 300])
@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray])
def test_a_small_value_is_sealed_and_opened_without_the_general_way(monkeypatch, hint, wrap):
    # the general way is correct but slow; a slip in the short one (a wrong
    # length, a wrong offset) would only show as lost speed, so catch it here
    signer = Signer(SECRET, "p")
    expected = signer.tag(SPEC, "t1", (struct.pack("<H", len(hint)) + hint, b"payload"))

    def general_way(*args):
        raise AssertionError("a small value took the general way")

    monkeypatch.setattr(Signer, "tag", general_way)
    sealed = signer.seal(SPEC, "t1", b"payload", hint)
    assert sealed[2:34] == expected
    assert bytes(signer.open(SPEC, "t1", wrap(sealed))) == b"payload"


@pytest.mark.parametrize("wrap", [bytes, memoryview, bytearray])
def test_every_truncation_of_a_sealed_value_fails_the_check(wrap):
    signer = Signer(SECRET, "p")
    sealed = signer.seal(SPEC, "t1", b"payload", b"hint")
    for cut in range(len(sealed)):
        with pytest.raises(SignatureError):
            signer.open(SPEC, "t1", wrap(sealed[:cut]))


def test_hashing_a_large_value_asks_check_between_slices_and_stops_when_it_raises():
    signer = Signer("secret", "redray")
    payload = os.urandom(20 * 1024 * 1024)  # three 8 MiB slices
    asked: list[int] = []
    assert signer.tag(b"spec", "t1", (b"hh", payload), lambda: asked.append(1)) == (
        reference_tag(b"hh", payload)
    )
    assert len(asked) == 3

    def give_up() -> None:
        asked.append(1)
        if len(asked) > 4:
            raise InterruptedError

    with pytest.raises(InterruptedError):
        signer.tag(b"spec", "t1", (b"hh", memoryview(payload)), give_up)
    assert len(asked) == 5  # the second slice was never hashed


def test_a_changed_byte_fails_the_check():
    signer = Signer(SECRET, "p")
    sealed = bytearray(signer.seal(SPEC, "t1", b"payload"))
    sealed[-1] ^= 1
    with pytest.raises(SignatureError, match="does not match"):
        signer.open(SPEC, "t1", bytes(sealed))


def test_a_value_cannot_move_to_another_key_or_role():
    signer = Signer(SECRET, "p")
    sealed = signer.seal(SPEC, "t1", b"payload")
    with pytest.raises(SignatureError):
        signer.open(SPEC, "t2", sealed)
    with pytest.raises(SignatureError):
        signer.open(OBJECT, "t1", sealed)


def test_another_prefix_or_secret_cannot_open_it():
    sealed = Signer(SECRET, "p").seal(SPEC, "t1", b"payload")
    for other in (Signer(SECRET, "q"), Signer("another", "p")):
        with pytest.raises(SignatureError):
            other.open(SPEC, "t1", sealed)


def test_an_unsigned_value_fails_when_a_secret_is_set():
    with pytest.raises(SignatureError, match="not signed"):
        Signer(SECRET, "p").open(SPEC, "t1", pickle.dumps(1))


def test_a_signed_value_fails_without_a_secret():
    sealed = Signer(SECRET, "p").seal(SPEC, "t1", b"payload")
    with pytest.raises(SignatureError, match="no cluster secret"):
        Signer(None, "p").open(SPEC, "t1", sealed)


def test_without_a_secret_values_are_stored_as_before():
    assert Signer(None, "p").seal(SPEC, "t1", b"payload") == b"payload"


def test_a_large_record_is_signed_over_every_frame():
    signer = Signer(SECRET, "p")
    frames = [b"head", b"x" * (300 * 1024)]
    fields = encode_record(KIND_VALUE, frames, signer, "o1")
    record = {k.encode(): bytes(v) for k, v in fields.items()}
    kind, got = decode_record(record, signer, "o1")
    assert kind == KIND_VALUE and [bytes(f) for f in got] == frames
    record[b"1"] = b"y" + record[b"1"][1:]
    with pytest.raises(SignatureError):
        decode_record(record, signer, "o1")


# -- attacks on a live cluster ---------------------------------------------------------


@redray.remote
def double(x):
    return 2 * x


@redray.remote
def length(data):
    return len(data)


@redray.remote
def slow(x):
    time.sleep(1.0)
    return x


@redray.remote
def touch(path):
    open(path, "w").close()


@redray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n


def _dead_letter_reasons(client, keys):
    return [f[b"reason"].decode() for _, f in client.xrange(keys.dead_letters)]


def test_signed_tasks_actors_and_objects_work(signed):
    assert redray.get(double.remote(redray.put(21))) == 42
    big = b"z" * (3 * 1024 * 1024)
    assert redray.get(length.remote(redray.put(big))) == len(big)
    counter = Counter.remote()
    assert redray.get([counter.incr.remote() for _ in range(3)]) == [1, 2, 3]


def test_a_function_blob_rewritten_in_redis_is_never_unpickled(
    signed, settings, redis_client, tmp_path
):
    marker = tmp_path / "pwned"

    @redray.remote
    def victim():
        return "real"

    runtime = redray.api.current_runtime()
    key, _ = runtime.function_key(victim._function, victim._name)
    redis_client.set(key, malicious_pickle(marker))
    with pytest.raises(redray.exceptions.RayError, match="signature check"):
        redray.get(victim.remote(), timeout=30)
    assert not marker.exists()
    assert signed.process.poll() is None
    assert any("signature check" in r for r in _dead_letter_reasons(redis_client, Keys()))


def test_a_queued_spec_rewritten_in_redis_is_never_unpickled_and_its_owner_is_told(
    signed, settings, node_factory, redis_client, tmp_path
):
    marker = tmp_path / "pwned"
    with pytest.warns(UserWarning, match="later"):
        ref = double.options(resources={"later": 1}).remote(1)  # queued: no node has it yet
    redray.api.current_runtime().flush()
    keys = Keys(settings.prefix)
    tid = ids.task_of(ref.hex())
    wait_for(lambda: redis_client.hexists(keys.task_spec, tid), what="the task queued")
    redis_client.hset(keys.task_spec, tid, malicious_pickle(marker))
    late = node_factory(num_cpus=1, resources={"later": 1}, config={"secret": SECRET})
    with pytest.raises(redray.exceptions.RaySystemError, match="signature check"):
        redray.get(ref, timeout=30)
    assert not marker.exists()
    assert late.process.poll() is None
    # the node still runs honest work
    assert redray.get(double.options(resources={"later": 1}).remote(4), timeout=30) == 8


def test_an_object_record_rewritten_in_redis_is_never_unpickled(
    signed, settings, redis_client, tmp_path
):
    marker = tmp_path / "pwned"
    ref = redray.put(b"honest")
    redis_client.hset(Keys(settings.prefix).obj(ref.hex()), "d", malicious_record(marker))
    with pytest.raises(redray.exceptions.RayError, match="signature check"):
        redray.get(length.remote(ref), timeout=30)  # the executor reads it from Redis
    assert not marker.exists()
    assert signed.process.poll() is None


def test_a_forged_notice_is_ignored_and_get_returns_the_real_value(
    signed, settings, redis_client, tmp_path
):
    marker = tmp_path / "pwned"
    ref = slow.remote("real")
    runtime = redray.api.current_runtime()
    runtime.flush()
    forged = b"o" + ref.hex().encode() + b"\0" + malicious_record(marker)
    redis_client.rpush(Keys(settings.prefix).inbox(runtime.worker_id), forged)
    assert redray.get(ref, timeout=30) == "real"
    assert not marker.exists()


def test_mismatched_secrets_run_nothing(settings, node_factory, redis_client, tmp_path):
    marker = tmp_path / "ran"
    node = node_factory(num_cpus=1, config={"secret": "another-secret"})
    redray.init(address=settings.to_url(), _secret=SECRET)

    with pytest.raises(redray.exceptions.RaySystemError, match="signature check"):
        redray.get(touch.remote(str(marker)), timeout=30)
    assert not marker.exists()
    assert node.process.poll() is None
    redray.shutdown()


def test_an_unsigned_driver_runs_nothing_on_a_signed_cluster(
    settings, node_factory, redis_client, tmp_path
):
    marker = tmp_path / "ran"
    node_factory(num_cpus=1, config={"secret": SECRET})
    redray.init(address=settings.to_url())  # no secret

    # the worker cannot read the owner from an unsigned spec: the driver sees
    # the task dropped without a result at its next re-check
    with pytest.raises(redray.exceptions.RaySystemError, match="signature check"):
        redray.get(touch.remote(str(marker)), timeout=30)
    assert not marker.exists()
    redray.shutdown()


def test_a_forged_actor_call_is_never_unpickled(signed, settings, redis_client, tmp_path):
    marker = tmp_path / "pwned"
    counter = Counter.remote()
    assert redray.get(counter.incr.remote()) == 1
    mailbox = Keys(settings.prefix).mailbox(counter._actor_id)
    redis_client.xadd(mailbox, {"s": malicious_pickle(marker)})
    assert redray.get(counter.incr.remote(), timeout=30) == 2  # the actor carries on
    assert not marker.exists()
    wait_for(
        lambda: any("signature check" in r for r in _dead_letter_reasons(redis_client, Keys())),
        what="the forged call kept as a dead letter",
    )


def test_a_forged_queue_item_is_never_unpickled(signed, settings, redis_client, tmp_path):
    marker = tmp_path / "pwned"
    queue = Queue()
    queue.put("honest")
    redis_client.rpush(Keys(settings.prefix).queue(queue.queue_id), malicious_pickle(marker))
    assert queue.get(timeout=5) == "honest"
    with pytest.raises(redray.exceptions.RaySystemError, match="signature check"):
        queue.get(timeout=5)
    assert not marker.exists()


def test_the_secret_is_not_in_any_command_line(signed):
    import psutil

    redray.get(double.remote(1))
    for proc in [
        psutil.Process(signed.process.pid),
        *psutil.Process(signed.process.pid).children(),
    ]:
        assert SECRET not in " ".join(proc.cmdline())
    assert SECRET not in " ".join(psutil.Process(os.getpid()).cmdline())


def test_a_task_dropped_as_unreadable_fails_for_its_owner_instead_of_hanging(
    cluster, settings, node_factory, redis_client
):
    with pytest.warns(UserWarning, match="later"):
        ref = double.options(resources={"later": 1}).remote(1)
    redray.api.current_runtime().flush()
    keys = Keys(settings.prefix)
    tid = ids.task_of(ref.hex())
    wait_for(lambda: redis_client.hexists(keys.task_spec, tid), what="the task queued")
    redis_client.hset(keys.task_spec, tid, b"not a task spec")
    node_factory(num_cpus=1, resources={"later": 1})
    with pytest.raises(redray.exceptions.RaySystemError, match="dead-letters"):
        redray.get(ref, timeout=30)
