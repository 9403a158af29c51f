"""The Lua scheduler scripts, each called directly against the real server.

No node or executor process runs here: each test lays out the node's resource
hashes itself, calls the ``Scripts`` wrappers and reads the keys back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import pytest
import redis

from redray.constants import Keys
from redray.scripts import Claimed, ReturnValue, Scripts
from redray.settings import Settings

JOB = "job1"
OWNER = "owner1"
CPU1 = "CPU=10000"
CPU2 = "CPU=20000"


# -- helpers -------------------------------------------------------------------------


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return Keys(settings.prefix)


@pytest.fixture
def scripts(redis_client: redis.Redis, keys: Keys) -> Scripts:
    redis_client.hset(keys.jobs, JOB, "{}")
    return Scripts(redis_client, keys)


def add_node(
    client: redis.Redis,
    keys: Keys,
    node: str,
    *,
    cpus: float = 1,
    gpus: dict[str, int] | None = None,
    **custom: int,
) -> None:
    """Free units of one node: CPU, GPU (sum of the devices) and custom resources."""
    avail: dict[str, int] = {"CPU": int(cpus * 10_000), **custom}
    if gpus:
        avail["GPU"] = sum(gpus.values())
        client.hset(keys.node_gpus(node), mapping=gpus)
    client.hset(keys.node_avail(node), mapping=avail)


def avail(client: redis.Redis, keys: Keys, node: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.node_avail(node)).items()}


def gpus_free(client: redis.Redis, keys: Keys, node: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.node_gpus(node)).items()}


def ready_members(client: redis.Redis, keys: Keys) -> list[str]:
    return [m.decode() for m in client.zrange(keys.ready, 0, -1)]


def state(client: redis.Redis, keys: Keys, tid: str) -> str | None:
    raw = client.hget(keys.task_state, tid)
    return None if raw is None else raw.decode()


def submit_one(scripts: Scripts, tid: str, shape: str = CPU1, deps: Sequence[str] = ()) -> int:
    return int(scripts.submit(JOB, [(tid, shape, b"spec-" + tid.encode(), list(deps))]))


def claim(scripts: Scripts, node: str, shapes: Sequence[str], worker: str = "w1") -> Claimed | None:
    return Scripts.parse_claim(scripts.claim(node, worker, shapes))


def complete(
    scripts: Scripts,
    tid: str,
    returns: Sequence[ReturnValue],
    *,
    node: str | None = None,
    reservation: str = "",
    owner: str = OWNER,
) -> int:
    return int(
        scripts.complete(
            task_id=tid,
            job_id=JOB,
            owner=owner,
            node_id=node,
            reservation=reservation,
            returns=returns,
        )
    )


def produce(scripts: Scripts, oid: str, data: bytes = b"x") -> None:
    """Publish object ``oid`` as the result of a task that never ran anywhere."""
    assert complete(scripts, "producer-" + oid, [ReturnValue(oid, data)]) == 1


@pytest.fixture
def ready_messages(redis_client: redis.Redis, keys: Keys) -> Iterator[object]:
    """A pub/sub subscribed to the ready channel; call it to drain what arrived."""
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.ready_channel)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg is not None and msg["type"] == "subscribe":
            break
    else:
        raise AssertionError("no subscribe confirmation")

    def drain(wait: float = 0.3) -> list[str]:
        out: list[str] = []
        while True:
            msg = pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
            if msg is None:
                return out
            out.append(msg["data"].decode())

    yield drain
    pubsub.close()


# -- submit ----------------------------------------------------------------------------


def test_submit_without_inputs_is_queued_ready(scripts: Scripts, redis_client, keys) -> None:
    assert submit_one(scripts, "t1") == 1
    members = ready_members(redis_client, keys)
    assert len(members) == 1
    shape, seq, tid = members[0].split("|")
    assert (shape, tid) == (CPU1, "t1")
    assert len(seq) == 14 and seq.isdigit()
    assert state(redis_client, keys, "t1") == "Q" + members[0]
    assert redis_client.hget(keys.task_spec, "t1") == b"spec-t1"
    assert redis_client.sismember(keys.job_tasks(JOB), "t1")
    assert redis_client.hget(keys.deps_left, "t1") is None


def test_submit_with_missing_input_waits(scripts: Scripts, redis_client, keys) -> None:
    assert submit_one(scripts, "t1", CPU2, deps=["o1"]) == 0
    assert ready_members(redis_client, keys) == []
    assert state(redis_client, keys, "t1") == "W" + CPU2
    assert redis_client.hget(keys.deps_left, "t1") == b"1"
    assert redis_client.smembers(keys.waiters("o1")) == {b"t1"}
    # the waiters set is recorded for cleanup when the job ends
    assert redis_client.sismember(keys.job_keys(JOB), keys.waiters("o1"))


def test_submit_counts_only_missing_inputs(scripts: Scripts, redis_client, keys) -> None:
    produce(scripts, "o1")
    assert submit_one(scripts, "t1", deps=["o1", "o2", "o3"]) == 0
    assert redis_client.hget(keys.deps_left, "t1") == b"2"
    assert not redis_client.exists(keys.waiters("o1"))
    assert redis_client.smembers(keys.waiters("o2")) == {b"t1"}


def test_submit_with_existing_input_is_ready_at_once(scripts: Scripts, redis_client, keys) -> None:
    produce(scripts, "o1")
    assert submit_one(scripts, "t1", deps=["o1"]) == 1
    assert state(redis_client, keys, "t1").startswith("Q" + CPU1 + "|")
    assert [m.split("|")[2] for m in ready_members(redis_client, keys)] == ["t1"]
    assert not redis_client.exists(keys.waiters("o1"))


def test_submit_batch_keeps_fifo_order(scripts: Scripts, redis_client, keys) -> None:
    tids = [f"t{i}" for i in (5, 3, 9, 1, 7, 2)]  # not in lexical order
    n = scripts.submit(JOB, [(t, CPU1, b"s", []) for t in tids])
    assert n == len(tids)
    members = ready_members(redis_client, keys)  # lexical order of the ZSET
    assert [m.split("|")[2] for m in members] == tids
    seqs = [int(state(redis_client, keys, t).split("|")[1]) for t in tids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # and a later submit comes after the whole batch
    submit_one(scripts, "t0")
    assert ready_members(redis_client, keys)[-1].endswith("|t0")


def test_submit_publishes_once_when_shape_queue_becomes_non_empty(
    scripts: Scripts, redis_client, keys, ready_messages
) -> None:
    batch = [(f"a{i}", CPU1, b"s", []) for i in range(5)]
    batch += [(f"b{i}", CPU2, b"s", []) for i in range(3)]
    scripts.submit(JOB, batch)
    # one message per shape whose queue was empty, not one per task
    assert sorted(ready_messages()) == sorted([CPU1, CPU2])


def test_submit_does_not_publish_when_shape_queue_already_non_empty(
    scripts: Scripts, redis_client, keys, ready_messages
) -> None:
    submit_one(scripts, "t1")
    assert ready_messages() == [CPU1]
    submit_one(scripts, "t2")
    scripts.submit(JOB, [("t3", CPU1, b"s", []), ("t4", CPU2, b"s", [])])
    assert ready_messages() == [CPU2]
    # once the queue is drained, the next submit announces it again
    add_node(redis_client, keys, "n1", cpus=8)
    while claim(scripts, "n1", [CPU1]) is not None:
        pass
    submit_one(scripts, "t5")
    assert ready_messages() == [CPU1]


def test_submit_of_waiting_task_does_not_publish(
    scripts: Scripts, redis_client, keys, ready_messages
) -> None:
    submit_one(scripts, "t1", deps=["o1"])
    assert ready_messages() == []


# -- claim -------------------------------------------------------------------------------


def test_claim_takes_oldest_fitting_task_across_shapes(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=8)
    submit_one(scripts, "a", CPU1)
    submit_one(scripts, "b", CPU2)
    submit_one(scripts, "c", CPU1)
    submit_one(scripts, "d", CPU2)
    order = [claim(scripts, "n1", [CPU2, CPU1]) for _ in range(4)]
    assert [c.task_id for c in order if c] == ["a", "b", "c", "d"]
    assert order[0].spec == b"spec-a"


def test_claim_skips_older_task_that_does_not_fit(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "big", CPU2)
    submit_one(scripts, "small", CPU1)
    got = claim(scripts, "n1", [CPU2, CPU1])
    assert got is not None and got.task_id == "small"
    assert ready_members(redis_client, keys)[0].endswith("|big")


def test_claim_reserves_units(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=3)
    submit_one(scripts, "t1", CPU2)
    got = claim(scripts, "n1", [CPU2], worker="wA")
    assert got == Claimed("t1", b"spec-t1", CPU2 + ";")
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert redis_client.hget(keys.node_running("n1"), "t1") == (CPU2 + ";").encode()
    assert state(redis_client, keys, "t1") == "Rn1 wA"
    assert ready_members(redis_client, keys) == []


def test_claim_returns_none_when_nothing_fits(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=0.5)
    assert claim(scripts, "n1", [CPU1]) is None  # empty queue
    submit_one(scripts, "t1", CPU1)
    assert claim(scripts, "n1", [CPU1]) is None  # too big
    assert avail(redis_client, keys, "n1") == {"CPU": 5_000}
    assert ready_members(redis_client, keys)[0].endswith("|t1")
    assert state(redis_client, keys, "t1").startswith("Q")


def test_claim_does_not_take_shape_whose_resource_node_lacks(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=4)
    shape = "CPU=10000,accel=10000"
    submit_one(scripts, "t1", shape)
    assert claim(scripts, "n1", [shape]) is None
    assert avail(redis_client, keys, "n1") == {"CPU": 40_000}
    assert not redis_client.exists(keys.node_running("n1"))
    gpu_shape = "CPU=10000,GPU=10000"
    submit_one(scripts, "t2", gpu_shape)
    assert claim(scripts, "n1", [gpu_shape]) is None


def test_two_claims_on_one_cpu_node_never_over_commit(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    submit_one(scripts, "t2")
    first = claim(scripts, "n1", [CPU1], worker="w1")
    second = claim(scripts, "n1", [CPU1], worker="w2")
    assert first is not None and first.task_id == "t1"
    assert second is None
    assert avail(redis_client, keys, "n1") == {"CPU": 0}
    assert ready_members(redis_client, keys)[0].endswith("|t2")


def test_claim_packs_fractional_gpus_onto_one_device(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4, gpus={"0": 10_000, "1": 10_000})
    shape = "CPU=10000,GPU=5000"
    submit_one(scripts, "t1", shape)
    submit_one(scripts, "t2", shape)
    a = claim(scripts, "n1", [shape])
    b = claim(scripts, "n1", [shape])
    assert a is not None and b is not None
    assert a.reservation == shape + ";0=5000"
    assert b.reservation == shape + ";0=5000"
    assert gpus_free(redis_client, keys, "n1") == {"0": 0, "1": 10_000}
    assert avail(redis_client, keys, "n1")["GPU"] == 10_000


def test_claim_fractional_gpu_prefers_fullest_device(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4, gpus={"0": 10_000, "1": 2_500, "2": 7_500})
    submit_one(scripts, "t1", "GPU=2500")
    got = claim(scripts, "n1", ["GPU=2500"])
    assert got is not None and got.reservation == "GPU=2500;1=2500"


def test_claim_whole_gpus_take_whole_free_devices(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4, gpus={"0": 10_000, "1": 10_000, "2": 10_000})
    submit_one(scripts, "half", "GPU=5000")
    submit_one(scripts, "two", "GPU=20000")
    half = claim(scripts, "n1", ["GPU=5000", "GPU=20000"])
    two = claim(scripts, "n1", ["GPU=5000", "GPU=20000"])
    assert half is not None and half.reservation == "GPU=5000;0=5000"
    assert two is not None and two.reservation == "GPU=20000;1=10000,2=10000"
    assert gpus_free(redis_client, keys, "n1") == {"0": 5_000, "1": 0, "2": 0}
    assert avail(redis_client, keys, "n1")["GPU"] == 5_000


def test_claim_whole_gpu_does_not_fit_on_partly_used_devices(
    scripts: Scripts, redis_client, keys
) -> None:
    # 1 GPU free in total, but split over two half-used devices
    add_node(redis_client, keys, "n1", cpus=4, gpus={"0": 5_000, "1": 5_000})
    assert avail(redis_client, keys, "n1")["GPU"] == 10_000
    submit_one(scripts, "t1", "CPU=10000,GPU=10000")
    assert claim(scripts, "n1", ["CPU=10000,GPU=10000"]) is None
    assert gpus_free(redis_client, keys, "n1") == {"0": 5_000, "1": 5_000}
    assert avail(redis_client, keys, "n1") == {"CPU": 40_000, "GPU": 10_000}


@pytest.mark.parametrize(
    "garbage",
    [f"{CPU1}|garbage", f"{CPU1}|", f"{CPU1}|00000000000000|ghost"],
    ids=["malformed", "no task id", "no such task"],
)
def test_claim_drops_ready_entries_that_name_no_queued_task(
    scripts: Scripts, redis_client, keys, garbage
) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    redis_client.zadd(keys.ready, {garbage: 0})
    submit_one(scripts, "t1")
    c = claim(scripts, "n1", [CPU1])
    assert c is not None and c.task_id == "t1"
    add_node(redis_client, keys, "n2", cpus=1)
    assert claim(scripts, "n2", [CPU1]) is None  # the garbage, wherever it sorted
    assert ready_members(redis_client, keys) == []
    assert redis_client.hgetall(keys.node_running("n1")) == {b"t1": c.reservation.encode()}
    [(_, letter)] = redis_client.xrange(keys.dead_letters)
    assert letter[b"source"] == keys.ready.encode() and letter[b"data"] == garbage.encode()


def test_claim_of_a_stale_entry_for_a_running_task_reserves_nothing(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    submit_one(scripts, "t1")
    [member] = ready_members(redis_client, keys)
    assert claim(scripts, "n1", [CPU1]) is not None
    redis_client.zadd(keys.ready, {member: 0})  # the same entry again
    assert claim(scripts, "n1", [CPU1]) is None
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_claim_custom_resources(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4, accel=20_000)
    shape = "CPU=10000,accel=15000"
    submit_one(scripts, "t1", shape)
    submit_one(scripts, "t2", shape)
    got = claim(scripts, "n1", [shape])
    assert got is not None and got.reservation == shape + ";"
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000, "accel": 5_000}
    assert claim(scripts, "n1", [shape]) is None


def test_claim_zero_resource_task_fits_any_node(scripts: Scripts, redis_client, keys) -> None:
    # num_cpus=0 and nothing else: the empty shape
    submit_one(scripts, "t1", "")
    assert ready_members(redis_client, keys)[0].startswith("|")
    got = claim(scripts, "bare-node", [""])  # a node without any avail hash
    assert got is not None and got.task_id == "t1" and got.reservation == ";"
    assert (
        complete(
            scripts,
            "t1",
            [ReturnValue("t1r1", b"v")],
            node="bare-node",
            reservation=got.reservation,
        )
        == 1
    )
    assert not redis_client.exists(keys.node_avail("bare-node"))


# -- complete ------------------------------------------------------------------------------


def claimed_task(scripts: Scripts, client: redis.Redis, keys: Keys, tid: str = "t1") -> Claimed:
    add_node(client, keys, "n1", cpus=2)
    submit_one(scripts, tid)
    got = claim(scripts, "n1", [CPU1])
    assert got is not None and got.task_id == tid
    return got


def test_complete_stores_result(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert (
        complete(
            scripts, "t1", [ReturnValue("t1r1", b"value")], node="n1", reservation=c.reservation
        )
        == 1
    )
    assert redis_client.hgetall(keys.obj("t1r1")) == {b"d": b"value"}
    assert redis_client.sismember(keys.job_keys(JOB), keys.obj("t1r1"))
    # the task's bookkeeping is gone
    assert redis_client.hget(keys.task_spec, "t1") is None
    assert state(redis_client, keys, "t1") is None
    assert not redis_client.sismember(keys.job_tasks(JOB), "t1")
    assert redis_client.hget(keys.node_running("n1"), "t1") is None


def test_complete_releases_reservation_exactly_once(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    for _ in range(2):
        complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", reservation=c.reservation)
        assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_complete_releases_gpu_devices_exactly_once(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2, gpus={"0": 10_000, "1": 10_000})
    submit_one(scripts, "t1", "GPU=20000")
    c = claim(scripts, "n1", ["GPU=20000"])
    assert c is not None and gpus_free(redis_client, keys, "n1") == {"0": 0, "1": 0}
    for _ in range(2):
        complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", reservation=c.reservation)
        assert gpus_free(redis_client, keys, "n1") == {"0": 10_000, "1": 10_000}
        assert avail(redis_client, keys, "n1") == {"CPU": 20_000, "GPU": 20_000}


def test_complete_first_write_wins(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert (
        complete(
            scripts, "t1", [ReturnValue("t1r1", b"first")], node="n1", reservation=c.reservation
        )
        == 1
    )
    assert (
        complete(
            scripts, "t1", [ReturnValue("t1r1", b"second")], node="n1", reservation=c.reservation
        )
        == 0
    )
    assert redis_client.hget(keys.obj("t1r1"), "d") == b"first"
    # only the first write told the owner
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"ot1r1\0first"]


def test_complete_makes_waiting_dependant_ready_on_last_input(
    scripts: Scripts, redis_client, keys, ready_messages
) -> None:
    submit_one(scripts, "t2", CPU2, deps=["o1", "o2"])
    assert state(redis_client, keys, "t2") == "W" + CPU2
    assert redis_client.hget(keys.deps_left, "t2") == b"2"

    produce(scripts, "o1")
    assert state(redis_client, keys, "t2") == "W" + CPU2
    assert redis_client.hget(keys.deps_left, "t2") == b"1"
    assert ready_members(redis_client, keys) == []
    assert ready_messages() == []

    produce(scripts, "o2")
    members = ready_members(redis_client, keys)
    assert len(members) == 1 and members[0].startswith(CPU2 + "|") and members[0].endswith("|t2")
    assert state(redis_client, keys, "t2") == "Q" + members[0]
    assert redis_client.hget(keys.deps_left, "t2") is None
    assert ready_messages() == [CPU2]
    assert not redis_client.exists(keys.waiters("o1"), keys.waiters("o2"))


def test_complete_of_one_output_wakes_many_dependants_in_order(
    scripts: Scripts, redis_client, keys
) -> None:
    for t in ("d1", "d2", "d3"):
        submit_one(scripts, t, deps=["o1"])
    produce(scripts, "o1")
    assert sorted(m.split("|")[2] for m in ready_members(redis_client, keys)) == ["d1", "d2", "d3"]


def test_complete_pushes_notice_to_owner_inbox(scripts: Scripts, redis_client, keys) -> None:
    small = b"s" * Scripts.NOTICE_LIMIT
    large = b"L" * (Scripts.NOTICE_LIMIT + 1)
    c = claimed_task(scripts, redis_client, keys)
    assert (
        complete(
            scripts,
            "t1",
            [ReturnValue("t1r1", small), ReturnValue("t1r2", large)],
            node="n1",
            reservation=c.reservation,
        )
        == 1
    )
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [
        b"ot1r1\0" + small,  # small enough: inline
        b"ot1r2\0",  # too large: the owner fetches it
    ]
    assert redis_client.hget(keys.obj("t1r2"), "d") == large


def test_complete_without_returns_notifies_task_done(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert complete(scripts, "t1", [], node="n1", reservation=c.reservation) == 0
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"tt1\0"]
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_complete_drops_results_when_job_is_gone(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    redis_client.hset(keys.staged("t1r2", "a1"), mapping={"h": b"v", "0": b"piece"})
    redis_client.hdel(keys.jobs, JOB)
    assert (
        complete(
            scripts,
            "t1",
            [ReturnValue("t1r1", b"v"), ReturnValue("t1r2", None, staged_attempt="a1")],
            node="n1",
            reservation=c.reservation,
        )
        == 0
    )
    assert not redis_client.exists(keys.obj("t1r1"), keys.obj("t1r2"))
    assert not redis_client.exists(keys.staged("t1r2", "a1"))
    assert not redis_client.exists(keys.inbox(OWNER))
    # the node's resources come back all the same
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert state(redis_client, keys, "t1") is None


def test_complete_renames_staged_result_into_place(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    record = {b"h": b"vheader", b"0": b"piece0", b"1": b"piece1"}
    redis_client.hset(keys.staged("t1r1", "a7"), mapping=record)
    assert (
        complete(
            scripts,
            "t1",
            [ReturnValue("t1r1", None, staged_attempt="a7"), ReturnValue("t1r2", b"inline")],
            node="n1",
            reservation=c.reservation,
        )
        == 1
    )
    assert redis_client.hgetall(keys.obj("t1r1")) == record
    assert not redis_client.exists(keys.staged("t1r1", "a7"))
    assert redis_client.hget(keys.obj("t1r2"), "d") == b"inline"
    # a staged value is never inlined in the notice
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"ot1r1\0", b"ot1r2\0inline"]


def test_complete_staged_duplicate_discards_staging_key(
    scripts: Scripts, redis_client, keys
) -> None:
    produce(scripts, "o1", b"first")
    redis_client.hset(keys.staged("o1", "a2"), mapping={"h": b"late"})
    assert complete(scripts, "dup", [ReturnValue("o1", None, staged_attempt="a2")]) == 0
    assert redis_client.hgetall(keys.obj("o1")) == {b"d": b"first"}
    assert not redis_client.exists(keys.staged("o1", "a2"))


def test_complete_gives_each_borrower_one_done_token(scripts: Scripts, redis_client, keys) -> None:
    assert scripts.subscribe("wA", ["o1"], True) == [False]
    assert scripts.subscribe("wB", ["o1"], True) == [False]
    assert scripts.subscribe("wB", ["o1"], True) == [False]  # same borrower twice: one member
    submit_one(scripts, "t9", deps=["o1"])  # a task waiting too: not a borrower
    produce(scripts, "o1")
    assert redis_client.lrange(keys.done("o1"), 0, -1) == [b"1", b"1"]
    assert redis_client.sismember(keys.job_keys(JOB), keys.done("o1"))
    assert not redis_client.exists(keys.waiters("o1"))
    assert state(redis_client, keys, "t9").startswith("Q")


def test_complete_without_borrowers_creates_no_done_list(
    scripts: Scripts, redis_client, keys
) -> None:
    produce(scripts, "o1")
    assert not redis_client.exists(keys.done("o1"))


# -- subscribe -------------------------------------------------------------------------------


def test_subscribe_reports_ready_and_subscribes_to_missing(
    scripts: Scripts, redis_client, keys
) -> None:
    produce(scripts, "o1")
    assert scripts.subscribe("wA", ["o1", "o2", "o3"], True) == [True, False, False]
    assert not redis_client.exists(keys.waiters("o1"))
    assert redis_client.smembers(keys.waiters("o2")) == {b"@wA"}
    assert redis_client.smembers(keys.waiters("o3")) == {b"@wA"}


def test_subscribe_with_flag_off_only_looks(scripts: Scripts, redis_client, keys) -> None:
    produce(scripts, "o1")
    assert scripts.subscribe("wA", ["o1", "o2"], False) == [True, False]
    assert not redis_client.exists(keys.waiters("o1"), keys.waiters("o2"))


def test_subscribe_to_nothing(scripts: Scripts) -> None:
    assert scripts.subscribe("wA", [], True) == []


# -- cancel ----------------------------------------------------------------------------------


def test_cancel_removes_queued_task(scripts: Scripts, redis_client, keys) -> None:
    submit_one(scripts, "t1")
    submit_one(scripts, "t2")
    assert scripts.cancel("t1") == "removed"
    assert [m.split("|")[2] for m in ready_members(redis_client, keys)] == ["t2"]
    assert state(redis_client, keys, "t1") == "C"
    # a cancelled task is never claimed
    add_node(redis_client, keys, "n1", cpus=4)
    got = claim(scripts, "n1", [CPU1])
    assert got is not None and got.task_id == "t2"
    assert claim(scripts, "n1", [CPU1]) is None


def test_cancel_removes_waiting_task(scripts: Scripts, redis_client, keys) -> None:
    submit_one(scripts, "t1", deps=["o1"])
    assert scripts.cancel("t1") == "removed"
    assert redis_client.hget(keys.deps_left, "t1") is None
    assert state(redis_client, keys, "t1") == "C"
    # its input arriving later does not bring it back
    produce(scripts, "o1")
    assert ready_members(redis_client, keys) == []
    assert state(redis_client, keys, "t1") == "C"


def test_cancel_of_running_task_returns_its_state(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert scripts.cancel("t1") == "Rn1 w1"
    assert state(redis_client, keys, "t1") == "Rn1 w1"
    assert redis_client.hget(keys.node_running("n1"), "t1") == c.reservation.encode()


def test_cancel_of_unknown_or_cancelled_task_is_gone(scripts: Scripts) -> None:
    assert scripts.cancel("nope") == "gone"
    submit_one(scripts, "t1")
    assert scripts.cancel("t1") == "removed"
    assert scripts.cancel("t1") == "gone"


# -- requeue ---------------------------------------------------------------------------------


def test_requeue_requeues_claimed_task_and_releases(
    scripts: Scripts, redis_client, keys, ready_messages
) -> None:
    add_node(redis_client, keys, "n1", cpus=1, gpus={"0": 10_000})
    shape = "CPU=10000,GPU=5000"
    submit_one(scripts, "t1", shape)
    c = claim(scripts, "n1", [shape])
    assert c is not None
    ready_messages()  # drain the submit's announcement
    assert scripts.requeue("n1", "t1", 3) == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000, "GPU": 10_000}
    assert gpus_free(redis_client, keys, "n1") == {"0": 10_000}
    assert redis_client.hget(keys.node_running("n1"), "t1") is None
    members = ready_members(redis_client, keys)
    assert len(members) == 1 and members[0].endswith("|t1")
    assert state(redis_client, keys, "t1") == "Q" + members[0]
    assert redis_client.hget(keys.retries, "t1") == b"1"
    assert ready_messages() == [shape]
    # it can be claimed again
    again = claim(scripts, "n1", [shape])
    assert again is not None and again.task_id == "t1" and again.spec == b"spec-t1"


def test_requeue_goes_behind_tasks_already_queued(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    assert claim(scripts, "n1", [CPU1]) is not None
    submit_one(scripts, "t2")
    assert scripts.requeue("n1", "t1", -1) == 1
    assert [m.split("|")[2] for m in ready_members(redis_client, keys)] == ["t2", "t1"]


def test_requeue_returns_zero_when_retries_spent(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert scripts.requeue("n1", "t1", 0) == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert redis_client.hget(keys.node_running("n1"), "t1") is None
    assert ready_members(redis_client, keys) == []
    # the caller then publishes the failure with an empty reservation: no double release
    complete(scripts, "t1", [ReturnValue("t1r1", b"err")], node="n1", reservation="")
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert c.reservation == CPU1 + ";"


def test_requeue_budget_counts_attempts(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    results = []
    for _ in range(3):
        assert claim(scripts, "n1", [CPU1]) is not None
        results.append(scripts.requeue("n1", "t1", 2))
    assert results == [1, 1, 0]


def test_requeue_of_task_not_running_on_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.requeue("other-node", "t1", 3) == -1
    assert scripts.requeue("n1", "unknown", 3) == -1
    submit_one(scripts, "queued")
    assert scripts.requeue("n1", "queued", 3) == -1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_requeue_unlimited_retries(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    for _ in range(20):
        assert claim(scripts, "n1", [CPU1]) is not None
        assert scripts.requeue("n1", "t1", -1) == 1
    assert redis_client.hget(keys.retries, "t1") == b"20"
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


# -- actors -----------------------------------------------------------------------------------


def create(scripts: Scripts, aid: str, *, name_key: str = "", detached: bool = False):
    return scripts.create_actor(
        actor_id=aid,
        job_id=JOB,
        name_key=name_key,
        detached=detached,
        fields={"task": "c-" + aid, "job": JOB},
    )


def test_create_actor_registers_record_mailbox_and_job(scripts: Scripts, redis_client, keys):
    assert create(scripts, "a1") == ("created", "a1")
    assert redis_client.hget(keys.actor("a1"), "state") == b"PENDING"
    assert redis_client.xinfo_groups(keys.mailbox("a1"))[0]["name"] == b"actor"
    assert redis_client.sismember(keys.job_actors(JOB), "a1")
    assert redis_client.sismember(keys.actors, "a1")


def test_create_actor_with_a_taken_name_returns_the_existing_actor(
    scripts: Scripts, redis_client, keys
) -> None:
    assert create(scripts, "a1", name_key="ns:counter") == ("created", "a1")
    assert create(scripts, "a2", name_key="ns:counter") == ("exists", "a1")
    assert not redis_client.exists(keys.actor("a2"))


def test_detached_actor_is_not_listed_under_its_job(scripts: Scripts, redis_client, keys):
    create(scripts, "a1", detached=True)
    assert not redis_client.sismember(keys.job_actors(JOB), "a1")
    assert not redis_client.sismember(keys.job_keys(JOB), keys.actor("a1"))


def test_actor_call_queues_in_order_while_the_actor_lives(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    assert scripts.actor_call([("a1", b"call-1"), ("a1", b"call-2")]) == [1, 1]
    entries = redis_client.xrange(keys.mailbox("a1"))
    assert [fields[b"s"] for _, fields in entries] == [b"call-1", b"call-2"]


def test_actor_call_to_a_dead_actor_returns_its_death_record(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"died-because", name_key="")
    assert scripts.actor_call([("a1", b"call")]) == [b"died-because"]
    assert redis_client.xlen(keys.mailbox("a1")) == 0


def test_actor_call_to_an_unknown_actor_returns_an_empty_record(scripts: Scripts):
    assert scripts.actor_call([("nobody", b"call")]) == [b""]


def test_actor_ready_gives_back_the_placement_cpu(scripts: Scripts, redis_client, keys):
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    c = claim(scripts, "n1", [CPU1])
    assert c is not None and avail(redis_client, keys, "n1") == {"CPU": 0}
    ready = scripts.actor_ready(
        actor_id="a1",
        node_id="n1",
        task_id="c-a1",
        release_cpu=10_000,
        keep=";",
        fields={"node": "n1", "worker": "w1"},
    )
    assert ready is True
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert redis_client.hget(keys.actor("a1"), "state") == b"ALIVE"
    assert redis_client.hget(keys.node_running("n1"), "c-a1") == b";"


@pytest.mark.parametrize("gone", ["killed", "record deleted"])
def test_actor_ready_refuses_an_actor_that_is_gone(scripts: Scripts, redis_client, keys, gone):
    create(scripts, "a1")
    if gone == "killed":
        scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="")
    else:
        redis_client.delete(keys.actor("a1"))
    ready = scripts.actor_ready(
        actor_id="a1", node_id="n1", task_id="c-a1", release_cpu=0, keep=";", fields={"node": "n1"}
    )
    assert ready is False
    state = redis_client.hget(keys.actor("a1"), "state")
    assert state == (b"DEAD" if gone == "killed" else None)  # never brought back to life


def test_actor_dead_frees_the_name_and_keeps_the_first_cause(scripts: Scripts, redis_client, keys):
    create(scripts, "a1", name_key="ns:counter")
    first = scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"first", name_key="ns:counter")
    again = scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"second", name_key="ns:counter")
    assert first[0] == "PENDING" and again[0] == "DEAD"
    assert redis_client.hget(keys.actor("a1"), "death") == b"first"
    assert not redis_client.hexists(keys.actor_names, "ns:counter")
    assert not redis_client.sismember(keys.actors, "a1")
    assert not redis_client.sismember(keys.job_actors(JOB), "a1")


def test_actor_dead_names_the_process_of_a_live_actor(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    redis_client.hset(keys.actor("a1"), mapping={"node": "n1", "worker": "w7"})
    assert scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="") == (
        "PENDING",
        "n1",
        "w7",
    )


def test_actor_dead_during_init_names_where_the_creation_task_runs(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    assert claim(scripts, "n1", [CPU1], worker="w3") is not None
    assert scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="") == (
        "PENDING",
        "n1",
        "w3",
    )


def test_actor_dead_of_an_unplaced_actor_names_no_process(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    submit_one(scripts, "c-a1")  # queued, not claimed
    assert scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="") == (
        "PENDING",
        "",
        "",
    )


# -- util.queue -------------------------------------------------------------------------------


def test_queue_take_takes_exactly_n_items_oldest_first(scripts: Scripts, redis_client, keys):
    items = keys.tag + ":q"
    redis_client.rpush(items, b"a", b"b", b"c")
    assert scripts.queue_take(items, 2) == [b"a", b"b"]
    assert redis_client.lrange(items, 0, -1) == [b"c"]


def test_queue_take_takes_nothing_when_too_few(scripts: Scripts, redis_client, keys):
    items = keys.tag + ":q"
    redis_client.rpush(items, b"a")
    assert scripts.queue_take(items, 2) is None
    assert redis_client.lrange(items, 0, -1) == [b"a"]


# -- robustness ------------------------------------------------------------------------------


def test_scripts_survive_script_flush(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    submit_one(scripts, "t1")
    redis_client.script_flush()
    submit_one(scripts, "t2")
    redis_client.script_flush()
    assert claim(scripts, "n1", [CPU1]) is not None
    redis_client.script_flush()
    assert scripts.cancel("t2") == "removed"
    redis_client.script_flush()
    assert (
        complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", reservation=CPU1 + ";") == 1
    )
    redis_client.script_flush()
    assert scripts.subscribe("wA", ["t1r1"], True) == [True]


def test_batched_scripts_survive_script_flush(scripts: Scripts, redis_client, keys) -> None:
    redis_client.script_flush()
    batch = scripts.batch()
    scripts.submit(JOB, [("t1", CPU1, b"s", [])], pipe=batch)
    batch.command("hset", keys.tag + ":other", "f", "v")
    scripts.submit(JOB, [("t2", CPU1, b"s", [])], pipe=batch)
    assert batch.execute() == [1, 1, 1]
    assert [m.split("|")[2] for m in ready_members(redis_client, keys)] == ["t1", "t2"]


def test_every_key_carries_the_hash_tag(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2, gpus={"0": 10_000})
    scripts.subscribe("wA", ["t1r1"], True)
    scripts.submit(
        JOB,
        [("t1", "CPU=10000,GPU=5000", b"s1", []), ("t2", CPU1, b"s2", ["t1r1", "t1r2"])],
    )
    c = claim(scripts, "n1", ["CPU=10000,GPU=5000"])
    assert c is not None
    redis_client.hset(keys.staged("t1r2", "a1"), "h", b"v")
    complete(
        scripts,
        "t1",
        [ReturnValue("t1r1", b"v"), ReturnValue("t1r2", None, staged_attempt="a1")],
        node="n1",
        reservation=c.reservation,
    )
    c2 = claim(scripts, "n1", [CPU1])
    assert c2 is not None and c2.task_id == "t2"
    scripts.requeue("n1", "t2", 1)
    c2 = claim(scripts, "n1", [CPU1])
    assert c2 is not None
    complete(scripts, "t2", [ReturnValue("t2r1", b"w")], node="n1", reservation=c2.reservation)
    all_keys = [k.decode() for k in redis_client.keys("*")]
    assert all_keys, "the cycle wrote no keys"
    assert [k for k in all_keys if not k.startswith(keys.tag)] == []
    # and the cycle left the node as it found it
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000, "GPU": 10_000}


def test_complete_for_no_owner_pushes_no_notice(scripts: Scripts, redis_client, keys) -> None:
    from redray.scripts import NO_OWNER

    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], owner=NO_OWNER) == 1
    complete(scripts, "t2", [], owner=NO_OWNER)  # a task with no results
    assert not redis_client.exists(keys.inbox(NO_OWNER))
    assert redis_client.exists(keys.obj("t1r1"))
