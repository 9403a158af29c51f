"""The Lua scripts, each called directly against the real server.

No node or executor process runs here: each test lays out the keys a script
reads itself (a node's resource hashes, the job's entry in ``jobs``), calls
the ``Scripts`` wrappers and reads the keys back. The protocol they implement
is described in ``docs/architecture.md``, section 12.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from redray.constants import MAILBOX_GROUP, Keys
from redray.scripts import NO_OWNER, Claimed, ReturnValue, Scripts
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
    # the owner exists: complete.lua tells only owners that have a watermark
    redis_client.set(keys.submitted(OWNER), 0)
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


def ready_tids(client: redis.Redis, keys: Keys) -> list[str]:
    return [m.split("|")[2] for m in ready_members(client, keys)]


def state(client: redis.Redis, keys: Keys, tid: str) -> str | None:
    raw = client.hget(keys.task_state, tid)
    return None if raw is None else raw.decode()


def record(client: redis.Redis, keys: Keys, node: str, tid: str) -> str | None:
    """The reservation record of ``tid`` on ``node``."""
    raw = client.hget(keys.node_running(node), tid)
    return None if raw is None else raw.decode()


def claim_record(client: redis.Redis, keys: Keys, worker: str) -> str | None:
    raw = client.get(keys.claim(worker))
    return None if raw is None else raw.decode()


def bell(client: redis.Redis, keys: Keys, shape: str) -> int:
    """How many tokens the bell of ``shape`` holds."""
    return int(client.llen(keys.bell(shape)))


def wake(client: redis.Redis, keys: Keys, node: str) -> list[bytes]:
    return list(client.lrange(keys.node_wake(node), 0, -1))


def watermark(client: redis.Redis, keys: Keys, owner: str = OWNER) -> int:
    return int(client.get(keys.submitted(owner)) or 0)


def server_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def submit(
    scripts: Scripts,
    tasks: Sequence[tuple[int, str, str, Sequence[str]]],
    *,
    owner: str = OWNER,
) -> int:
    """Submit ``(submission number, task id, shape, inputs)``; spec 'spec-<tid>'."""
    batch = [(n, tid, shape, b"spec-" + tid.encode(), list(deps)) for n, tid, shape, deps in tasks]
    return int(scripts.submit(JOB, owner, batch))


def submit_one(
    scripts: Scripts,
    tid: str,
    shape: str = CPU1,
    deps: Sequence[str] = (),
    *,
    owner: str = OWNER,
) -> int:
    """Submit one task under the owner's next submission number."""
    n = watermark(scripts.client, scripts.keys, owner) + 1
    return submit(scripts, [(n, tid, shape, deps)], owner=owner)


def claim(
    scripts: Scripts,
    node: str,
    shapes: Sequence[str],
    worker: str = "w1",
    *,
    held: int = 0,
) -> Claimed | None:
    reply = scripts.claim(node, worker, shapes, held=held)
    return Scripts.parse_claim(reply)


def complete_reply(
    scripts: Scripts,
    tid: str,
    returns: Sequence[ReturnValue],
    *,
    node: str | None = None,
    owner: str = OWNER,
    **kwargs: Any,
) -> tuple[int, Claimed | None, list[str]]:
    """complete.lua's parsed reply: (stored, the next task claimed or None,
    shapes of dependants made ready whose bell was not passed)."""
    reply = scripts.complete(
        task_id=tid, job_id=JOB, owner=owner, node_id=node, returns=returns, **kwargs
    )
    return Scripts.parse_complete(reply)


def complete(
    scripts: Scripts,
    tid: str,
    returns: Sequence[ReturnValue],
    *,
    node: str | None = None,
    owner: str = OWNER,
    **kwargs: Any,
) -> int:
    return complete_reply(scripts, tid, returns, node=node, owner=owner, **kwargs)[0]


def produce(scripts: Scripts, oid: str, data: bytes = b"x", **kwargs: Any) -> list[str]:
    """Publish object ``oid`` as the result of a task that never ran anywhere;
    returns the shapes of the dependants it made ready without ringing."""
    stored, claimed, missed = complete_reply(
        scripts, "producer-" + oid, [ReturnValue(oid, data)], **kwargs
    )
    assert stored == 1 and claimed is None
    return missed


def claimed_task(
    scripts: Scripts,
    client: redis.Redis,
    keys: Keys,
    tid: str = "t1",
    *,
    shape: str = CPU1,
    cpus: float = 2,
    worker: str = "w1",
) -> Claimed:
    """``tid`` submitted and claimed by ``worker`` on node n1 (``cpus`` CPUs)."""
    add_node(client, keys, "n1", cpus=cpus)
    submit_one(scripts, tid, shape)
    got = claim(scripts, "n1", [shape], worker)
    assert got is not None and got.task_id == tid
    return got


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
    assert redis_client.hget(keys.deps_left, "t1") == b" o1 "
    assert redis_client.smembers(keys.waiters("o1")) == {b"t1"}
    # the waiters set is recorded for cleanup when the job ends
    assert redis_client.sismember(keys.job_keys(JOB), keys.waiters("o1"))


def test_submit_records_only_missing_inputs(scripts: Scripts, redis_client, keys) -> None:
    produce(scripts, "o1")
    assert submit_one(scripts, "t1", deps=["o1", "o2", "o3"]) == 0
    assert redis_client.hget(keys.deps_left, "t1") == b" o2 o3 "
    assert not redis_client.exists(keys.waiters("o1"))
    assert redis_client.smembers(keys.waiters("o2")) == {b"t1"}


def test_submit_lists_a_repeated_input_once(scripts: Scripts, redis_client, keys) -> None:
    assert submit_one(scripts, "t1", deps=["o1", "o2", "o1"]) == 0
    assert redis_client.hget(keys.deps_left, "t1") == b" o1 o2 "
    produce(scripts, "o1")
    assert redis_client.hget(keys.deps_left, "t1") == b" o2 "


def test_submit_with_existing_input_is_ready_at_once(scripts: Scripts, redis_client, keys) -> None:
    produce(scripts, "o1")
    assert submit_one(scripts, "t1", deps=["o1"]) == 1
    assert state(redis_client, keys, "t1").startswith("Q" + CPU1 + "|")
    assert ready_tids(redis_client, keys) == ["t1"]
    assert not redis_client.exists(keys.waiters("o1"))
    assert bell(redis_client, keys, CPU1) == 1


def test_submit_batch_keeps_fifo_order(scripts: Scripts, redis_client, keys) -> None:
    tids = [f"t{i}" for i in (5, 3, 9, 1, 7, 2)]  # not in lexical order
    n = submit(scripts, [(i + 1, t, CPU1, []) for i, t in enumerate(tids)])
    assert n == len(tids)
    assert ready_tids(redis_client, keys) == tids  # lexical order of the ZSET
    seqs = [int(state(redis_client, keys, t).split("|")[1]) for t in tids]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # and a later submit comes after the whole batch
    submit_one(scripts, "t0")
    assert ready_members(redis_client, keys)[-1].endswith("|t0")


def test_submit_of_nested_tasks_queues_them_ahead_of_top_level_ones(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    submit(scripts, [(1, "top1", CPU1, []), (2, "top2", CPU1, [])])
    scripts.submit(JOB, "executor", [(1, "child", CPU1, b"spec-child", [])], nested=True)
    assert ready_tids(redis_client, keys) == ["child", "top1", "top2"]
    got = claim(scripts, "n1", [CPU1])
    assert got is not None and got.task_id == "child"


def test_a_nested_task_waiting_for_inputs_keeps_its_priority_when_ready(
    scripts: Scripts, redis_client, keys
) -> None:
    scripts.submit(JOB, "executor", [(1, "child", CPU1, b"spec-child", ["o1"])], nested=True)
    assert state(redis_client, keys, "child") == "w" + CPU1
    submit(scripts, [(1, "top1", CPU1, [])])
    produce(scripts, "o1")
    assert ready_tids(redis_client, keys) == ["child", "top1"]


def test_submit_pushes_one_bell_token_per_ready_task(scripts: Scripts, redis_client, keys) -> None:
    batch = [(i + 1, f"a{i}", CPU1, []) for i in range(5)]
    batch += [(i + 6, f"b{i}", CPU2, []) for i in range(3)]
    batch += [(9, "waits", CPU2, ["o1"])]
    assert submit(scripts, batch) == 8
    assert bell(redis_client, keys, CPU1) == 5
    assert bell(redis_client, keys, CPU2) == 3


def test_submit_of_waiting_task_rings_no_bell(scripts: Scripts, redis_client, keys) -> None:
    submit_one(scripts, "t1", deps=["o1"])
    assert not redis_client.exists(keys.bell(CPU1))


def test_submit_raises_the_owner_watermark(scripts: Scripts, redis_client, keys) -> None:
    assert watermark(redis_client, keys) == 0
    submit(scripts, [(1, "t1", CPU1, []), (2, "t2", CPU1, [])])
    assert watermark(redis_client, keys) == 2
    submit(scripts, [(5, "t5", CPU1, []), (7, "t7", CPU1, ["o1"])])  # gaps are fine
    assert watermark(redis_client, keys) == 7


def test_submit_skips_entries_at_or_below_the_watermark(
    scripts: Scripts, redis_client, keys
) -> None:
    redis_client.set(keys.submitted(OWNER), 5)
    assert submit(scripts, [(4, "t4", CPU1, []), (5, "t5", CPU1, []), (6, "t6", CPU1, [])]) == 1
    assert ready_tids(redis_client, keys) == ["t6"]
    assert redis_client.hkeys(keys.task_spec) == [b"t6"]
    assert redis_client.smembers(keys.job_tasks(JOB)) == {b"t6"}
    assert bell(redis_client, keys, CPU1) == 1
    assert watermark(redis_client, keys) == 6


def test_submit_watermarks_are_per_owner(scripts: Scripts, redis_client, keys) -> None:
    submit(scripts, [(1, "a1", CPU1, [])], owner="ownerA")
    assert submit(scripts, [(1, "b1", CPU1, [])], owner="ownerB") == 1
    assert sorted(ready_tids(redis_client, keys)) == ["a1", "b1"]
    assert watermark(redis_client, keys, "ownerA") == 1
    assert watermark(redis_client, keys, "ownerB") == 1


def test_resent_batch_changes_nothing(scripts: Scripts, redis_client, keys) -> None:
    batch = [(1, "t1", CPU1, []), (2, "t2", CPU2, ["o1"]), (3, "t3", CPU1, [])]
    assert submit(scripts, batch) == 2
    before = {
        "ready": ready_members(redis_client, keys),
        "state": redis_client.hgetall(keys.task_state),
        "deps": redis_client.hgetall(keys.deps_left),
        "seq": redis_client.get(keys.seq),
    }
    assert submit(scripts, batch) == 0
    after = {
        "ready": ready_members(redis_client, keys),
        "state": redis_client.hgetall(keys.task_state),
        "deps": redis_client.hgetall(keys.deps_left),
        "seq": redis_client.get(keys.seq),
    }
    assert after == before
    assert bell(redis_client, keys, CPU1) == 2


def test_resent_batch_applies_only_the_part_after_the_watermark(
    scripts: Scripts, redis_client, keys
) -> None:
    batch = [(1, "t1", CPU1, []), (2, "t2", CPU1, []), (3, "t3", CPU1, [])]
    submit(scripts, batch[:2])  # the server applied this much before the reply was lost
    assert submit(scripts, batch) == 1
    assert ready_tids(redis_client, keys) == ["t1", "t2", "t3"]
    assert bell(redis_client, keys, CPU1) == 3
    assert watermark(redis_client, keys) == 3


def test_resent_batch_does_not_requeue_a_running_task(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    batch = [(1, "t1", CPU1, [])]
    submit(scripts, batch)
    assert claim(scripts, "n1", [CPU1]) is not None
    assert submit(scripts, batch) == 0
    assert state(redis_client, keys, "t1") == "Rn1 w1"
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU1) == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert claim(scripts, "n1", [CPU1], "w2") is None


def test_resent_batch_does_not_recreate_a_finished_task(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    batch = [(1, "t1", CPU1, [])]
    submit(scripts, batch)
    assert claim(scripts, "n1", [CPU1]) is not None
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", worker_id="w1") == 1
    assert submit(scripts, batch) == 0
    assert state(redis_client, keys, "t1") is None
    assert redis_client.hget(keys.task_spec, "t1") is None
    assert not redis_client.sismember(keys.job_tasks(JOB), "t1")
    assert ready_members(redis_client, keys) == []


# -- claim -------------------------------------------------------------------------------


def test_claim_takes_oldest_fitting_task_across_shapes(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=8)
    submit_one(scripts, "a", CPU1)
    submit_one(scripts, "b", CPU2)
    submit_one(scripts, "c", CPU1)
    submit_one(scripts, "d", CPU2)
    order = [claim(scripts, "n1", [CPU2, CPU1], f"w{i}") for i in range(4)]
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
    assert ready_members(redis_client, keys) == []


def test_claim_reports_the_free_cpu_left_after_it(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=3)
    submit_one(scripts, "t1", CPU2)
    got = claim(scripts, "n1", [CPU2])
    assert got is not None and got.free_cpu == 10_000


def test_claim_of_a_shape_without_cpu_reports_the_node_free_cpu(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=3, accel=20_000)
    submit_one(scripts, "t1", "accel=15000")
    got = claim(scripts, "n1", ["accel=15000"])
    assert got is not None and got.free_cpu == 30_000


def test_claim_records_the_claimant(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=3)
    submit_one(scripts, "t1", CPU2)
    assert claim(scripts, "n1", [CPU2], worker="wA") is not None
    # reservation record, task state and claim record, in the same atomic step
    assert record(redis_client, keys, "n1", "t1") == "wA " + CPU2 + "; 0"
    assert state(redis_client, keys, "t1") == "Rn1 wA"
    assert claim_record(redis_client, keys, "wA") == "t1"


def test_claim_again_returns_the_task_it_holds(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4)
    submit_one(scripts, "t1")
    submit_one(scripts, "t2")
    first = claim(scripts, "n1", [CPU1], "wA")
    # the reply was lost: the executor asks again
    again = claim(scripts, "n1", [CPU1], "wA")
    assert first is not None and again == first
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000}
    assert ready_tids(redis_client, keys) == ["t2"]
    assert bell(redis_client, keys, CPU1) == 1
    assert claim_record(redis_client, keys, "wA") == "t1"


def test_claim_again_returns_the_held_task_even_when_cancelled(
    scripts: Scripts, redis_client, keys
) -> None:
    first = claimed_task(scripts, redis_client, keys, worker="wA")
    assert scripts.cancel("t1") == "Rn1 wA"
    assert claim(scripts, "n1", [CPU1], "wA") == first


def test_claim_ignores_a_claim_record_of_a_finished_task(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    redis_client.set(keys.claim("wA"), "old")  # the task is gone
    submit_one(scripts, "t1")
    got = claim(scripts, "n1", [CPU1], "wA")
    assert got is not None and got.task_id == "t1"
    assert claim_record(redis_client, keys, "wA") == "t1"


def test_claim_record_of_a_task_another_executor_holds_is_not_honoured(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    redis_client.set(keys.claim("wB"), "t1")
    assert claim(scripts, "n1", [CPU1], "wB") is None
    assert claim_record(redis_client, keys, "wB") is None
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_claim_consumes_the_bell_token_of_the_claimed_shape(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=4)
    submit_one(scripts, "a", CPU1)
    submit_one(scripts, "b", CPU1)
    submit_one(scripts, "c", CPU2)
    assert claim(scripts, "n1", [CPU1, CPU2], "w1") is not None
    assert bell(redis_client, keys, CPU1) == 1
    assert bell(redis_client, keys, CPU2) == 1


def test_claim_with_a_held_token_pops_no_other(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4)
    submit_one(scripts, "a", CPU1)
    submit_one(scripts, "b", CPU1)
    assert redis_client.lpop(keys.bell(CPU1)) == b"1"  # the executor's BLPOP
    got = claim(scripts, "n1", [CPU2, CPU1], held=2)
    assert got is not None and got.task_id == "a"
    assert bell(redis_client, keys, CPU1) == 1  # b's token


def test_claim_gives_back_a_held_token_of_another_shape_while_it_has_queued_tasks(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "big", CPU2)
    submit_one(scripts, "small", CPU1)
    redis_client.lpop(keys.bell(CPU2))  # holds big's token, but big does not fit
    got = claim(scripts, "n1", [CPU2, CPU1], held=1)
    assert got is not None and got.task_id == "small"
    assert bell(redis_client, keys, CPU2) == 1  # given back: another node may fit big
    assert bell(redis_client, keys, CPU1) == 0  # small's token consumed


def test_claim_gives_back_a_held_token_when_nothing_fits(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=0.5)
    submit_one(scripts, "t1")
    redis_client.lpop(keys.bell(CPU1))
    assert claim(scripts, "n1", [CPU1], held=1) is None
    assert bell(redis_client, keys, CPU1) == 1


def test_claim_drops_a_held_token_of_an_empty_queue(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    assert scripts.cancel("t1") == "removed"  # its token goes stale
    redis_client.lpop(keys.bell(CPU1))
    assert claim(scripts, "n1", [CPU1], held=1) is None
    assert bell(redis_client, keys, CPU1) == 0


def test_claim_drops_a_held_token_when_the_queue_has_enough_tokens(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=0.5)
    submit_one(scripts, "t1")
    redis_client.rpush(keys.bell(CPU1), "1")  # a duplicate token
    redis_client.lpop(keys.bell(CPU1))
    assert claim(scripts, "n1", [CPU1], held=1) is None
    assert bell(redis_client, keys, CPU1) == 1  # one token for one queued task


def test_claim_never_wakes_the_node(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    assert claim(scripts, "n1", [CPU1]) is None  # nothing queued
    submit_one(scripts, "t1", CPU2)
    assert claim(scripts, "n1", [CPU2]) is None  # nothing fits
    submit_one(scripts, "t2", CPU1)
    assert claim(scripts, "n1", [CPU1]) is not None  # a task taken
    assert wake(redis_client, keys, "n1") == []


def test_claim_returns_none_when_nothing_fits(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=0.5)
    assert claim(scripts, "n1", [CPU1]) is None  # empty queue
    submit_one(scripts, "t1", CPU1)
    assert claim(scripts, "n1", [CPU1]) is None  # too big
    assert avail(redis_client, keys, "n1") == {"CPU": 5_000}
    assert ready_members(redis_client, keys)[0].endswith("|t1")
    assert state(redis_client, keys, "t1").startswith("Q")
    assert claim_record(redis_client, keys, "w1") is None
    assert bell(redis_client, keys, CPU1) == 1


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
    a = claim(scripts, "n1", [shape], "w1")
    b = claim(scripts, "n1", [shape], "w2")
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
    half = claim(scripts, "n1", ["GPU=5000", "GPU=20000"], "w1")
    two = claim(scripts, "n1", ["GPU=5000", "GPU=20000"], "w2")
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
    assert claim(scripts, "n2", [CPU1], "w2") is None  # the garbage, wherever it sorted
    assert ready_members(redis_client, keys) == []
    assert redis_client.hgetall(keys.node_running("n1")) == {
        b"t1": ("w1 " + c.reservation + " 0").encode()
    }
    assert not redis_client.exists(keys.node_running("n2"))
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
    assert claim(scripts, "n1", [CPU1], "w2") is None
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_claim_custom_resources(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=4, accel=20_000)
    shape = "CPU=10000,accel=15000"
    submit_one(scripts, "t1", shape)
    submit_one(scripts, "t2", shape)
    got = claim(scripts, "n1", [shape])
    assert got is not None and got.reservation == shape + ";"
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000, "accel": 5_000}
    assert claim(scripts, "n1", [shape], "w2") is None


def test_claim_zero_resource_task_fits_any_node(scripts: Scripts, redis_client, keys) -> None:
    # num_cpus=0 and nothing else: the empty shape
    submit_one(scripts, "t1", "")
    assert ready_members(redis_client, keys)[0].startswith("|")
    got = claim(scripts, "bare-node", [""])  # a node without any avail hash
    assert got is not None and got.task_id == "t1" and got.reservation == ";"
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="bare-node") == 1
    assert not redis_client.exists(keys.node_avail("bare-node"))


# -- complete ------------------------------------------------------------------------------


def test_complete_stores_result(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"value")], node="n1") == 1
    assert redis_client.hgetall(keys.obj("t1r1")) == {b"d": b"value"}
    assert redis_client.sismember(keys.job_keys(JOB), keys.obj("t1r1"))
    # the task's bookkeeping is gone
    assert redis_client.hget(keys.task_spec, "t1") is None
    assert state(redis_client, keys, "t1") is None
    assert not redis_client.sismember(keys.job_tasks(JOB), "t1")
    assert record(redis_client, keys, "n1", "t1") is None


def test_complete_releases_reservation_exactly_once(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    for _ in range(2):
        complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
        assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_complete_releases_what_the_record_says_not_what_a_caller_thinks(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=3)
    submit_one(scripts, "t1", CPU2)
    assert claim(scripts, "n1", [CPU2]) is not None
    # the reservation of CPU2 comes back though the caller passes none
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000}


def test_complete_releases_gpu_devices_exactly_once(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2, gpus={"0": 10_000, "1": 10_000})
    submit_one(scripts, "t1", "GPU=20000")
    c = claim(scripts, "n1", ["GPU=20000"])
    assert c is not None and gpus_free(redis_client, keys, "n1") == {"0": 0, "1": 0}
    for _ in range(2):
        complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
        assert gpus_free(redis_client, keys, "n1") == {"0": 10_000, "1": 10_000}
        assert avail(redis_client, keys, "n1") == {"CPU": 20_000, "GPU": 20_000}


def test_complete_clears_the_claim_record_of_this_task(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", worker_id="wA")
    assert claim_record(redis_client, keys, "wA") is None


def test_complete_keeps_a_claim_record_that_names_another_task(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    redis_client.set(keys.claim("wA"), "t2")  # the executor already claimed its next task
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", worker_id="wA")
    assert claim_record(redis_client, keys, "wA") == "t2"


def test_complete_wakes_the_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert wake(redis_client, keys, "n1") == [b"r"]
    # a second run releases nothing, so tells nobody
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_complete_with_claim_next_does_not_wake_the_node(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    # nothing queued: the freed resources are not announced either
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", worker_id="w1", claim_next=True)
    assert wake(redis_client, keys, "n1") == []
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def complete_and_claim(
    scripts: Scripts,
    tid: str,
    returns: Sequence[ReturnValue],
    *,
    worker: str = "w1",
    shapes: Sequence[str] = (CPU1,),
    **kwargs: Any,
) -> tuple[int, Claimed | None, list[str]]:
    """complete.lua on node n1 for ``worker``, claiming its next task from ``shapes``."""
    return complete_reply(
        scripts,
        tid,
        returns,
        node="n1",
        worker_id=worker,
        claim_next=True,
        bells=list(shapes),
        **kwargs,
    )


def test_complete_with_claim_next_releases_and_claims_the_next_task_in_one_call(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, cpus=1)  # the node is full
    submit_one(scripts, "t2")
    assert bell(redis_client, keys, CPU1) == 1
    reply = complete_and_claim(scripts, "t1", [ReturnValue("t1r1", b"v")])
    # t2 fits only on the CPU that t1 gave back in the same call
    assert reply == (1, Claimed("t2", b"spec-t2", CPU1 + ";"), [])
    assert reply[1] is not None and reply[1].free_cpu == 0
    assert record(redis_client, keys, "n1", "t1") is None
    assert record(redis_client, keys, "n1", "t2") == "w1 " + CPU1 + "; 0"
    assert state(redis_client, keys, "t2") == "Rn1 w1"
    assert claim_record(redis_client, keys, "w1") == "t2"
    assert avail(redis_client, keys, "n1") == {"CPU": 0}
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU1) == 0  # t2's token consumed
    assert wake(redis_client, keys, "n1") == []  # no 'r': the claim took the resources


def test_complete_with_claim_next_claims_a_dependant_it_made_ready(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, cpus=1)
    submit_one(scripts, "t2", CPU1, deps=["t1r1"])
    assert state(redis_client, keys, "t2") == "W" + CPU1
    stored, claimed, missed = complete_and_claim(scripts, "t1", [ReturnValue("t1r1", b"v")])
    assert (stored, missed) == (1, [])
    assert claimed == Claimed("t2", b"spec-t2", CPU1 + ";")
    assert redis_client.hget(keys.deps_left, "t2") is None
    assert state(redis_client, keys, "t2") == "Rn1 w1"
    assert claim_record(redis_client, keys, "w1") == "t2"
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU1) == 0  # rung for t2, then consumed by its claim
    assert avail(redis_client, keys, "n1") == {"CPU": 0}


def test_complete_with_claim_next_and_nothing_queued_claims_nothing(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    assert claim_record(redis_client, keys, "w1") == "t1"
    assert complete_and_claim(scripts, "t1", [ReturnValue("t1r1", b"v")]) == (1, None, [])
    # cleared because it named the finished task, and nothing claimed since
    assert claim_record(redis_client, keys, "w1") is None
    assert not redis_client.exists(keys.node_running("n1"))
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_resent_complete_with_claim_next_returns_the_task_it_claimed(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, cpus=2)
    submit_one(scripts, "t2")
    submit_one(scripts, "t3")
    returns = [ReturnValue("t1r1", b"v")]
    first = complete_and_claim(scripts, "t1", returns)
    assert first == (1, Claimed("t2", b"spec-t2", CPU1 + ";"), [])
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    # the reply was lost: the executor sends the same completion again
    again = complete_and_claim(scripts, "t1", returns)
    assert again == (0, first[1], [])
    assert claim_record(redis_client, keys, "w1") == "t2"
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}  # t1 released once
    assert redis_client.hgetall(keys.node_running("n1")) == {b"t2": ("w1 " + CPU1 + "; 0").encode()}
    assert ready_tids(redis_client, keys) == ["t3"]
    assert state(redis_client, keys, "t3").startswith("Q")
    assert bell(redis_client, keys, CPU1) == 1  # t3's token
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"ot1r1\0v"]


def test_complete_ignores_claim_next_for_a_part(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    submit_one(scripts, "t2")
    part = [ReturnValue("t1r1", b"v1")]
    assert complete_and_claim(scripts, "t1", part, final=False) == (1, None, [])
    assert claim_record(redis_client, keys, "w1") == "t1"
    assert record(redis_client, keys, "n1", "t1") == "w1 " + CPU1 + "; 0"
    assert state(redis_client, keys, "t1") == "Rn1 w1"
    assert ready_tids(redis_client, keys) == ["t2"]
    assert state(redis_client, keys, "t2").startswith("Q")
    assert bell(redis_client, keys, CPU1) == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_complete_with_claim_next_keeps_a_stale_ready_entry_as_a_dead_letter(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    garbage = f"{CPU1}|00000000000000|ghost"
    redis_client.zadd(keys.ready, {garbage: 0})
    assert complete_and_claim(scripts, "t1", [ReturnValue("t1r1", b"v")]) == (1, None, [])
    assert ready_members(redis_client, keys) == []
    [(_, letter)] = redis_client.xrange(keys.dead_letters)
    assert letter[b"source"] == keys.ready.encode() and letter[b"data"] == garbage.encode()


def test_complete_without_a_reservation_wakes_no_node(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert wake(redis_client, keys, "n1") == []
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_complete_first_write_wins(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"first")], node="n1") == 1
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"second")], node="n1") == 0
    assert redis_client.hget(keys.obj("t1r1"), "d") == b"first"
    # only the first write told the owner
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"ot1r1\0first"]


def test_complete_makes_waiting_dependant_ready_on_last_input(
    scripts: Scripts, redis_client, keys
) -> None:
    submit_one(scripts, "t2", CPU2, deps=["o1", "o2"])
    assert state(redis_client, keys, "t2") == "W" + CPU2
    assert redis_client.hget(keys.deps_left, "t2") == b" o1 o2 "

    assert produce(scripts, "o1", bells=[CPU2]) == []
    assert state(redis_client, keys, "t2") == "W" + CPU2
    assert redis_client.hget(keys.deps_left, "t2") == b" o2 "
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU2) == 0

    assert produce(scripts, "o2", bells=[CPU2]) == []
    members = ready_members(redis_client, keys)
    assert len(members) == 1 and members[0].startswith(CPU2 + "|") and members[0].endswith("|t2")
    assert state(redis_client, keys, "t2") == "Q" + members[0]
    assert redis_client.hget(keys.deps_left, "t2") is None
    assert bell(redis_client, keys, CPU2) == 1
    assert not redis_client.exists(keys.waiters("o1"), keys.waiters("o2"))


def test_complete_removes_a_delivered_input_once(scripts: Scripts, redis_client, keys) -> None:
    submit_one(scripts, "t2", deps=["o1", "o2"])
    produce(scripts, "o1")
    assert redis_client.hget(keys.deps_left, "t2") == b" o2 "
    # "o1 exists" delivered to t2 a second time
    redis_client.delete(keys.obj("o1"))
    redis_client.sadd(keys.waiters("o1"), "t2")
    produce(scripts, "o1")
    assert redis_client.hget(keys.deps_left, "t2") == b" o2 "
    assert state(redis_client, keys, "t2") == "W" + CPU1
    assert ready_members(redis_client, keys) == []


def test_complete_rings_the_bell_of_a_dependant_made_ready(
    scripts: Scripts, redis_client, keys
) -> None:
    submit_one(scripts, "t2", CPU2, deps=["o1"])
    assert produce(scripts, "o1", bells=[CPU1, CPU2]) == []
    assert bell(redis_client, keys, CPU2) == 1
    assert bell(redis_client, keys, CPU1) == 0


def test_complete_returns_the_shapes_whose_bell_was_not_passed(
    scripts: Scripts, redis_client, keys
) -> None:
    submit_one(scripts, "a", CPU1, deps=["o1"])
    submit_one(scripts, "b", CPU2, deps=["o1"])
    submit_one(scripts, "c", CPU2, deps=["o1"])
    missed = produce(scripts, "o1", bells=[CPU1])
    # one shape per task made ready: the caller pushes one token each
    assert missed == [CPU2, CPU2]
    assert bell(redis_client, keys, CPU1) == 1
    assert bell(redis_client, keys, CPU2) == 0
    assert sorted(ready_tids(redis_client, keys)) == ["a", "b", "c"]


def test_complete_of_one_output_wakes_many_dependants_in_order(
    scripts: Scripts, redis_client, keys
) -> None:
    for t in ("d1", "d2", "d3"):
        submit_one(scripts, t, deps=["o1"])
    produce(scripts, "o1")
    assert sorted(ready_tids(redis_client, keys)) == ["d1", "d2", "d3"]


def test_complete_pushes_notice_to_owner_inbox(scripts: Scripts, redis_client, keys) -> None:
    small = b"s" * Scripts.NOTICE_LIMIT
    large = b"L" * (Scripts.NOTICE_LIMIT + 1)
    claimed_task(scripts, redis_client, keys)
    returns = [ReturnValue("t1r1", small), ReturnValue("t1r2", large)]
    assert complete(scripts, "t1", returns, node="n1") == 1
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [
        b"ot1r1\0" + small,  # small enough: inline
        b"ot1r2\0",  # too large: the owner fetches it
    ]
    assert redis_client.hget(keys.obj("t1r2"), "d") == large


def test_a_runs_publish_after_its_task_finished_stores_nothing_and_tells_no_one(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", run=True) == 1
    assert redis_client.lpop(keys.inbox(OWNER)) == b"ot1r1\0v"
    redis_client.delete(keys.obj("t1r1"))  # the owner got it and freed it
    # a superseded run of t1 (or the same publish re-sent) arrives late
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"w")], node="n1", run=True) == 0
    assert redis_client.exists(keys.obj("t1r1")) == 0
    assert redis_client.llen(keys.inbox(OWNER)) == 0


def test_a_runs_late_publish_drops_its_staged_value(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", run=True)
    redis_client.delete(keys.obj("t1r1"))  # freed by its owner
    staged = keys.staged("t1r1", "a2")
    redis_client.hset(staged, "h", b"header")
    late = [ReturnValue("t1r1", None, staged_attempt="a2")]
    assert complete(scripts, "t1", late, node="n1", run=True) == 0
    assert redis_client.exists(staged) == 0
    assert redis_client.exists(keys.obj("t1r1")) == 0


def test_a_runs_partial_publish_after_its_task_finished_stores_nothing(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1", run=True)
    late = [ReturnValue("t1r2", b"item")]
    assert complete(scripts, "t1", late, node="n1", run=True, final=False) == 0
    assert redis_client.exists(keys.obj("t1r2")) == 0


def test_a_publish_not_from_a_run_is_stored_for_a_task_with_no_state(
    scripts: Scripts, redis_client, keys
) -> None:
    # a driver failing a task whose spec is gone, an actor call: not guarded
    assert complete(scripts, "t9", [ReturnValue("t9r1", b"err")]) == 1
    assert redis_client.exists(keys.obj("t9r1")) == 1


def test_complete_of_many_returns_pushes_notices_in_chunks(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    returns = [ReturnValue(f"t1r{i}", b"v%d" % i) for i in range(5000)]
    assert complete(scripts, "t1", returns, node="n1") == 1
    notices = redis_client.lrange(keys.inbox(OWNER), 0, -1)
    assert len(notices) == 5000
    assert notices[0] == b"ot1r0\0v0" and notices[-1] == b"ot1r4999\0v4999"
    assert redis_client.scard(keys.job_keys(JOB)) == 5000
    assert redis_client.hget(keys.obj("t1r4999"), "d") == b"v4999"
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_complete_of_a_part_keeps_the_task_and_its_reservation(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    part = [ReturnValue("t1r1", b"v1")]
    assert complete(scripts, "t1", part, node="n1", worker_id="wA", final=False) == 1
    assert redis_client.hget(keys.obj("t1r1"), "d") == b"v1"
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert record(redis_client, keys, "n1", "t1") == "wA " + CPU1 + "; 0"
    assert state(redis_client, keys, "t1") == "Rn1 wA"
    assert claim_record(redis_client, keys, "wA") == "t1"
    assert wake(redis_client, keys, "n1") == []
    # the last part finishes it
    last = [ReturnValue("t1r2", b"v2")]
    assert complete(scripts, "t1", last, node="n1", worker_id="wA") == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert state(redis_client, keys, "t1") is None
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"ot1r1\0v1", b"ot1r2\0v2"]


def test_complete_without_returns_notifies_task_done(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert complete(scripts, "t1", [], node="n1") == 0
    assert redis_client.lrange(keys.inbox(OWNER), 0, -1) == [b"tt1\0"]
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_complete_drops_results_when_job_is_gone(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    redis_client.hset(keys.staged("t1r2", "a1"), mapping={"h": b"v", "0": b"piece"})
    redis_client.hdel(keys.jobs, JOB)
    returns = [ReturnValue("t1r1", b"v"), ReturnValue("t1r2", None, staged_attempt="a1")]
    assert complete_reply(scripts, "t1", returns, node="n1") == (0, None, [])
    assert not redis_client.exists(keys.obj("t1r1"), keys.obj("t1r2"))
    assert not redis_client.exists(keys.staged("t1r2", "a1"))
    assert not redis_client.exists(keys.inbox(OWNER))
    # the node's resources come back all the same
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert state(redis_client, keys, "t1") is None


def test_complete_for_a_gone_job_clears_the_claim_record(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    redis_client.hdel(keys.jobs, JOB)
    assert complete_and_claim(scripts, "t1", [ReturnValue("t1r1", b"v")]) == (0, None, [])
    assert claim_record(redis_client, keys, "w1") is None


def test_complete_renames_staged_result_into_place(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    data = {b"h": b"vheader", b"0": b"piece0", b"1": b"piece1"}
    redis_client.hset(keys.staged("t1r1", "a7"), mapping=data)
    returns = [ReturnValue("t1r1", None, staged_attempt="a7"), ReturnValue("t1r2", b"inline")]
    assert complete(scripts, "t1", returns, node="n1") == 1
    assert redis_client.hgetall(keys.obj("t1r1")) == data
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


def test_complete_for_no_owner_pushes_no_notice(scripts: Scripts, redis_client, keys) -> None:
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], owner=NO_OWNER) == 1
    complete(scripts, "t2", [], owner=NO_OWNER)  # a task with no results
    assert not redis_client.exists(keys.inbox(NO_OWNER))
    assert redis_client.exists(keys.obj("t1r1"))


def delivered_call(scripts: Scripts, client: redis.Redis, keys: Keys, aid: str = "a1") -> str:
    """An actor with one call read from its mailbox (pending); returns the entry id."""
    create(scripts, aid)
    n = watermark(client, keys) + 1
    assert scripts.actor_call(OWNER, [(n, aid, b"call-1")]) == [1]
    [[_, [(entry_id, _fields)]]] = client.xreadgroup(
        MAILBOX_GROUP, "consumer", {keys.mailbox(aid): ">"}, count=1
    )
    return entry_id.decode()


def test_complete_of_an_actor_call_acks_and_deletes_its_mailbox_entry(
    scripts: Scripts, redis_client, keys
) -> None:
    entry_id = delivered_call(scripts, redis_client, keys)
    assert redis_client.xpending(keys.mailbox("a1"), MAILBOX_GROUP)["pending"] == 1
    returns = [ReturnValue("call1r1", b"v")]
    assert complete(scripts, "call1", returns, actor_id="a1", entry_id=entry_id) == 1
    assert redis_client.xpending(keys.mailbox("a1"), MAILBOX_GROUP)["pending"] == 0
    assert redis_client.xlen(keys.mailbox("a1")) == 0


def test_complete_of_an_actor_call_forgets_its_cancel(scripts: Scripts, redis_client, keys) -> None:
    entry_id = delivered_call(scripts, redis_client, keys)
    redis_client.sadd(keys.actor_cancelled("a1"), "call1", "call2")
    complete(scripts, "call1", [ReturnValue("call1r1", b"v")], actor_id="a1", entry_id=entry_id)
    assert redis_client.smembers(keys.actor_cancelled("a1")) == {b"call2"}


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
    assert ready_tids(redis_client, keys) == ["t2"]
    assert state(redis_client, keys, "t1") == "C"
    # a cancelled task is never claimed
    add_node(redis_client, keys, "n1", cpus=4)
    got = claim(scripts, "n1", [CPU1], "w1")
    assert got is not None and got.task_id == "t2"
    assert claim(scripts, "n1", [CPU1], "w2") is None


def test_cancel_removes_waiting_task(scripts: Scripts, redis_client, keys) -> None:
    submit_one(scripts, "t1", deps=["o1"])
    assert scripts.cancel("t1") == "removed"
    assert redis_client.hget(keys.deps_left, "t1") is None
    assert state(redis_client, keys, "t1") == "C"
    # its input arriving later does not bring it back
    assert produce(scripts, "o1") == []
    assert ready_members(redis_client, keys) == []
    assert state(redis_client, keys, "t1") == "C"


def test_cancel_of_running_task_flags_its_state(scripts: Scripts, redis_client, keys) -> None:
    c = claimed_task(scripts, redis_client, keys)
    assert scripts.cancel("t1") == "Rn1 w1"
    assert state(redis_client, keys, "t1") == "Rn1 w1 c"
    assert record(redis_client, keys, "n1", "t1") == "w1 " + c.reservation + " 0"


def test_cancel_of_running_task_again_returns_the_same(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.cancel("t1") == "Rn1 w1"
    assert scripts.cancel("t1") == "Rn1 w1"
    assert state(redis_client, keys, "t1") == "Rn1 w1 c"


def test_cancel_of_finished_task_is_gone(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert scripts.cancel("t1") == "gone"


def test_cancel_of_unknown_or_cancelled_task_is_gone(scripts: Scripts) -> None:
    assert scripts.cancel("nope") == "gone"
    submit_one(scripts, "t1")
    assert scripts.cancel("t1") == "removed"
    assert scripts.cancel("t1") == "gone"


# -- requeue ---------------------------------------------------------------------------------


def test_requeue_requeues_claimed_task_and_releases(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1, gpus={"0": 10_000})
    shape = "CPU=10000,GPU=5000"
    submit_one(scripts, "t1", shape)
    assert claim(scripts, "n1", [shape]) is not None
    assert scripts.requeue("n1", "t1", "w1", 3, shape) == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000, "GPU": 10_000}
    assert gpus_free(redis_client, keys, "n1") == {"0": 10_000}
    assert record(redis_client, keys, "n1", "t1") is None
    members = ready_members(redis_client, keys)
    assert len(members) == 1 and members[0].endswith("|t1")
    assert state(redis_client, keys, "t1") == "Q" + members[0]
    assert redis_client.hget(keys.retries, "t1") == b"1"
    # it can be claimed again
    again = claim(scripts, "n1", [shape], "w2")
    assert again is not None and again.task_id == "t1" and again.spec == b"spec-t1"


def test_requeue_rings_the_bell_of_its_shape(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert bell(redis_client, keys, CPU1) == 0
    scripts.requeue("n1", "t1", "w1", 3, CPU1)
    assert bell(redis_client, keys, CPU1) == 1


def test_requeue_wakes_the_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    scripts.requeue("n1", "t1", "w1", 0, CPU1)  # even when it is not queued again
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_requeue_clears_the_dead_executors_claim_record(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    assert scripts.requeue("n1", "t1", "wA", 3, CPU1) == 1
    assert claim_record(redis_client, keys, "wA") is None


def test_requeue_keeps_a_claim_record_that_names_another_task(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, worker="wA")
    redis_client.set(keys.claim("wA"), "t2")
    scripts.requeue("n1", "t1", "wA", 3, CPU1)
    assert claim_record(redis_client, keys, "wA") == "t2"


def test_requeue_goes_behind_tasks_already_queued(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    assert claim(scripts, "n1", [CPU1]) is not None
    submit_one(scripts, "t2")
    assert scripts.requeue("n1", "t1", "w1", -1, CPU1) == 1
    assert ready_tids(redis_client, keys) == ["t2", "t1"]


def test_requeue_returns_zero_when_retries_spent(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.requeue("n1", "t1", "w1", 0, CPU1) == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert record(redis_client, keys, "n1", "t1") is None
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU1) == 0
    # the caller then publishes the failure: the reservation is not released twice
    complete(scripts, "t1", [ReturnValue("t1r1", b"err")], node="n1")
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_requeue_budget_counts_attempts(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    results = []
    for _ in range(3):
        assert claim(scripts, "n1", [CPU1]) is not None
        results.append(scripts.requeue("n1", "t1", "w1", 2, CPU1))
    assert results == [1, 1, 0]


def test_requeue_of_a_cancelled_task_does_not_queue_it(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.cancel("t1") == "Rn1 w1"
    assert scripts.requeue("n1", "t1", "w1", -1, CPU1) == 0
    assert ready_members(redis_client, keys) == []
    assert bell(redis_client, keys, CPU1) == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert state(redis_client, keys, "t1") == "Rn1 w1 c"


def test_requeue_of_task_not_running_on_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.requeue("other-node", "t1", "w1", 3, CPU1) == -1
    assert scripts.requeue("n1", "unknown", "w1", 3, CPU1) == -1
    submit_one(scripts, "queued")
    assert scripts.requeue("n1", "queued", "w1", 3, CPU1) == -1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert ready_tids(redis_client, keys) == ["queued"]


def test_requeue_is_idempotent(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.requeue("n1", "t1", "w1", 3, CPU1) == 1
    assert scripts.requeue("n1", "t1", "w1", 3, CPU1) == -1
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert ready_tids(redis_client, keys) == ["t1"]
    assert bell(redis_client, keys, CPU1) == 1
    assert redis_client.hget(keys.retries, "t1") == b"1"
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_requeue_unlimited_retries(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "t1")
    for _ in range(20):
        assert claim(scripts, "n1", [CPU1]) is not None
        assert scripts.requeue("n1", "t1", "w1", -1, CPU1) == 1
    assert redis_client.hget(keys.retries, "t1") == b"20"
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_requeue_of_a_placed_actor_queues_it_under_its_placement_shape(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    assert claim(scripts, "n1", [CPU1]) is not None
    ready(scripts, "a1")  # gave back its placement CPU: its record holds nothing now
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert scripts.requeue("n1", "c-a1", "w1", 1, CPU1) == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert ready_members(redis_client, keys)[0].startswith(CPU1 + "|")
    assert bell(redis_client, keys, CPU1) == 1


# -- block / unblock --------------------------------------------------------------------------


def test_block_gives_back_the_cpu_and_records_it(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys, shape=CPU2, cpus=3)
    assert scripts.block("n1", "t1") == 20_000
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000}
    assert record(redis_client, keys, "n1", "t1") == "w1 " + CPU2 + "; 20000"


def test_block_wakes_the_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    scripts.block("n1", "t1")
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_block_twice_gives_back_once(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.block("n1", "t1") == 10_000
    assert scripts.block("n1", "t1") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}
    assert record(redis_client, keys, "n1", "t1") == "w1 " + CPU1 + "; 10000"
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_block_of_a_task_without_cpu_gives_back_nothing(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=1, accel=10_000)
    submit_one(scripts, "t1", "accel=10000")
    assert claim(scripts, "n1", ["accel=10000"]) is not None
    assert scripts.block("n1", "t1") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000, "accel": 0}
    assert record(redis_client, keys, "n1", "t1") == "w1 accel=10000; 0"
    assert wake(redis_client, keys, "n1") == []


def test_block_ignores_custom_resources_whose_name_ends_in_cpu(
    scripts: Scripts, redis_client, keys
) -> None:
    # num_cpus=0, resources={"my_CPU": 1}: the shape holds no CPU at all
    add_node(redis_client, keys, "n1", cpus=1, my_CPU=10_000)
    submit_one(scripts, "t1", "my_CPU=10000")
    assert claim(scripts, "n1", ["my_CPU=10000"]) is not None
    assert scripts.block("n1", "t1") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000, "my_CPU": 0}


def test_block_of_unknown_task_gives_back_nothing(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    assert scripts.block("n1", "nope") == 0
    assert scripts.unblock("n1", "nope") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert not redis_client.exists(keys.node_running("n1"))


def test_unblock_takes_the_cpu_again(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys, shape=CPU2, cpus=3)
    scripts.block("n1", "t1")
    assert scripts.unblock("n1", "t1") == 20_000
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert record(redis_client, keys, "n1", "t1") == "w1 " + CPU2 + "; 0"


def test_unblock_twice_takes_once(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    scripts.block("n1", "t1")
    assert scripts.unblock("n1", "t1") == 10_000
    assert scripts.unblock("n1", "t1") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_unblock_without_block_takes_nothing(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys)
    assert scripts.unblock("n1", "t1") == 0
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}


def test_unblock_may_over_commit_the_node(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys, cpus=1)
    scripts.block("n1", "t1")
    submit_one(scripts, "t2")
    assert claim(scripts, "n1", [CPU1], "w2") is not None  # runs on the given-back CPU
    assert scripts.unblock("n1", "t1") == 10_000
    assert avail(redis_client, keys, "n1") == {"CPU": -10_000}


def test_a_blocked_task_that_completes_releases_only_what_it_holds(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=3, gpus={"0": 10_000})
    shape = "CPU=20000,GPU=5000"
    submit_one(scripts, "t1", shape)
    assert claim(scripts, "n1", [shape]) is not None
    scripts.block("n1", "t1")
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000, "GPU": 10_000}
    assert gpus_free(redis_client, keys, "n1") == {"0": 10_000}


def test_a_blocked_task_that_is_requeued_releases_only_what_it_holds(
    scripts: Scripts, redis_client, keys
) -> None:
    claimed_task(scripts, redis_client, keys, shape=CPU2, cpus=3)
    scripts.block("n1", "t1")
    assert scripts.requeue("n1", "t1", "w1", 3, CPU2) == 1
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000}


def test_a_task_unblocked_then_completed_releases_all(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys, shape=CPU2, cpus=3)
    scripts.block("n1", "t1")
    scripts.unblock("n1", "t1")
    complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1")
    assert avail(redis_client, keys, "n1") == {"CPU": 30_000}


# -- liveness -------------------------------------------------------------------------------


def test_heartbeat_records_the_server_time(scripts: Scripts, redis_client, keys) -> None:
    redis_client.hset(keys.nodes, "n1", "{}")
    before = server_ms(redis_client)
    assert scripts.heartbeat(keys.nodes, keys.heartbeats, "n1") is True
    after = server_ms(redis_client)
    beat = redis_client.zscore(keys.heartbeats, "n1")
    assert beat is not None and before <= beat <= after


def test_heartbeat_returns_false_once_the_id_is_no_longer_registered(
    scripts: Scripts, redis_client, keys
) -> None:
    redis_client.hset(keys.jobs, "j2", "{}")
    assert scripts.heartbeat(keys.jobs, keys.job_beats, "j2") is True
    beat = redis_client.zscore(keys.job_beats, "j2")
    redis_client.hdel(keys.jobs, "j2")  # reaped
    time.sleep(0.01)
    assert scripts.heartbeat(keys.jobs, keys.job_beats, "j2") is False
    assert redis_client.zscore(keys.job_beats, "j2") == beat
    assert scripts.heartbeat(keys.jobs, keys.job_beats, "never") is False
    assert redis_client.zscore(keys.job_beats, "never") is None


def test_expired_lists_members_older_than_the_age(scripts: Scripts, redis_client, keys) -> None:
    now = server_ms(redis_client)
    redis_client.zadd(keys.heartbeats, {"old": now - 60_000, "fresh": now - 100})
    server_now, old = scripts.expired(keys.heartbeats, 30)
    assert old == [("old", now - 60_000)]
    assert now <= server_now <= server_ms(redis_client)


def test_expired_ages_by_the_server_clock(scripts: Scripts, redis_client, keys) -> None:
    # scores written by the server's heartbeat, read against the server's clock
    redis_client.hset(keys.nodes, "n1", "{}")
    scripts.heartbeat(keys.nodes, keys.heartbeats, "n1")
    assert scripts.expired(keys.heartbeats, 5)[1] == []
    time.sleep(0.1)
    now, old = scripts.expired(keys.heartbeats, 0.05)
    assert [m for m, _ in old] == ["n1"]
    assert now - old[0][1] >= 50


def test_expired_returns_at_most_the_limit_oldest_first(
    scripts: Scripts, redis_client, keys
) -> None:
    now = server_ms(redis_client)
    redis_client.zadd(keys.heartbeats, {f"n{i}": now - 100_000 + i for i in range(5)})
    _, old = scripts.expired(keys.heartbeats, 30, limit=2)
    assert [m for m, _ in old] == ["n0", "n1"]


# -- lock ---------------------------------------------------------------------------------


def test_lock_is_taken_by_one_token_at_a_time(scripts: Scripts, keys) -> None:
    key = keys.lock("job:j1")
    assert scripts.lock(key, "take", "A") is True
    assert scripts.lock(key, "take", "B") is False
    assert scripts.lock(key, "take", "A") is True  # the holder asking again


def test_lock_renew_by_the_holder_extends_it(scripts: Scripts, redis_client, keys) -> None:
    key = keys.lock("job:j1")
    scripts.lock(key, "take", "A", ttl_s=1)
    assert scripts.lock(key, "renew", "A", ttl_s=30) is True
    assert redis_client.pttl(key) > 1_000


def test_lock_cannot_be_renewed_by_another_token(scripts: Scripts, redis_client, keys) -> None:
    key = keys.lock("job:j1")
    scripts.lock(key, "take", "A", ttl_s=1)
    assert scripts.lock(key, "renew", "B", ttl_s=30) is False
    assert redis_client.pttl(key) <= 1_000
    assert redis_client.get(key) == b"A"


def test_lock_cannot_be_released_by_another_token(scripts: Scripts, redis_client, keys) -> None:
    key = keys.lock("job:j1")
    scripts.lock(key, "take", "A")
    assert scripts.lock(key, "release", "B") is False
    assert redis_client.get(key) == b"A"


def test_lock_released_by_the_holder_can_be_taken_again(scripts: Scripts, keys) -> None:
    key = keys.lock("job:j1")
    scripts.lock(key, "take", "A")
    assert scripts.lock(key, "release", "A") is True
    assert scripts.lock(key, "take", "B") is True


def test_lock_expires(scripts: Scripts, keys) -> None:
    key = keys.lock("job:j1")
    assert scripts.lock(key, "take", "A", ttl_s=0.05) is True
    time.sleep(0.15)
    assert scripts.lock(key, "renew", "A") is False  # too late: it lost the lock
    assert scripts.lock(key, "take", "B") is True


# -- job_cleanup ----------------------------------------------------------------------------


def test_job_cleanup_removes_queued_and_waiting_tasks(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    submit_one(scripts, "queued")
    submit_one(scripts, "waiting", deps=["o1"])
    redis_client.hset(keys.retries, "queued", 2)
    lock = keys.lock("job:" + JOB)
    assert scripts.lock(lock, "take", "tok")
    assert scripts.job_cleanup(lock, "tok", JOB, 500) == 2
    for tid in ("queued", "waiting"):
        assert state(redis_client, keys, tid) is None
        assert redis_client.hget(keys.task_spec, tid) is None
    assert redis_client.hget(keys.deps_left, "waiting") is None
    assert redis_client.hget(keys.retries, "queued") is None
    assert ready_members(redis_client, keys) == []
    assert not redis_client.exists(keys.job_tasks(JOB))
    assert claim(scripts, "n1", [CPU1]) is None


def test_job_cleanup_leaves_running_tasks(scripts: Scripts, redis_client, keys) -> None:
    claimed_task(scripts, redis_client, keys, "running")
    lock = keys.lock("job:" + JOB)
    scripts.lock(lock, "take", "tok")
    assert scripts.job_cleanup(lock, "tok", JOB, 500) == 1
    assert state(redis_client, keys, "running") == "Rn1 w1"
    assert redis_client.hget(keys.task_spec, "running") == b"spec-running"
    assert record(redis_client, keys, "n1", "running") is not None


def test_job_cleanup_works_in_batches(scripts: Scripts, redis_client, keys) -> None:
    submit(scripts, [(i + 1, f"t{i}", CPU1, []) for i in range(7)])
    lock = keys.lock("job:" + JOB)
    scripts.lock(lock, "take", "tok")
    assert [scripts.job_cleanup(lock, "tok", JOB, 3) for _ in range(4)] == [3, 3, 1, 0]
    assert ready_members(redis_client, keys) == []
    assert redis_client.hlen(keys.task_state) == 0


def test_job_cleanup_stops_when_the_caller_lost_the_lock(
    scripts: Scripts, redis_client, keys
) -> None:
    submit_one(scripts, "t1")
    lock = keys.lock("job:" + JOB)
    assert scripts.job_cleanup(lock, "tok", JOB, 500) == -1  # nobody holds it
    scripts.lock(lock, "take", "other")
    assert scripts.job_cleanup(lock, "tok", JOB, 500) == -1
    assert ready_tids(redis_client, keys) == ["t1"]
    assert redis_client.smembers(keys.job_tasks(JOB)) == {b"t1"}


# -- shape ----------------------------------------------------------------------------------


def test_register_shape_reports_a_new_shape_once(scripts: Scripts, redis_client, keys) -> None:
    redis_client.hset(keys.nodes, "n1", "{}")
    assert scripts.register_shape(CPU2) == (True, {b"n1": b"{}"})
    assert scripts.register_shape(CPU2)[0] is False
    assert redis_client.hkeys(keys.shapes) == [CPU2.encode()]


def test_shape_wake_tells_every_listed_executor_of_every_node(
    scripts: Scripts, redis_client, keys
) -> None:
    redis_client.sadd(keys.node_workers("n1"), "w1", "w2")
    redis_client.sadd(keys.node_workers("n2"), "w3")
    assert scripts.wake_for_shape(["n1", "n2"]) == 3
    for worker in ("w1", "w2", "w3"):
        assert redis_client.lrange(keys.executor_wake(worker), 0, -1) == [b"s"]
    assert wake(redis_client, keys, "n1") == []  # not a node-wide token: one executor takes those


def test_shape_wake_skips_an_executor_its_node_no_longer_lists(
    scripts: Scripts, redis_client, keys
) -> None:
    redis_client.sadd(keys.node_workers("n1"), "w1")
    # as recovery.forget_executor does, after a read of the set saw w2
    assert (
        scripts._run(
            "shape_wake",
            [
                keys.node_workers("n1"),
                keys.executor_wake("w1"),
                keys.node_workers("n1"),
                keys.executor_wake("w2"),
            ],
            ["w1", "w2"],
        )
        == 1
    )
    assert not redis_client.exists(keys.executor_wake("w2"))


def test_an_executor_wake_list_holds_one_token(scripts: Scripts, redis_client, keys) -> None:
    redis_client.sadd(keys.node_workers("n1"), "w1")
    for _ in range(40):
        scripts.wake_for_shape(["n1"])
    assert redis_client.llen(keys.executor_wake("w1")) == 1


def test_shape_wake_without_executors_runs_no_script(scripts: Scripts, redis_client, keys) -> None:
    assert scripts.wake_for_shape([]) == 0
    assert scripts.wake_for_shape(["nobody"]) == 0


# -- actors -----------------------------------------------------------------------------------


def create(scripts: Scripts, aid: str, *, name_key: str = "", detached: bool = False):
    return scripts.create_actor(
        actor_id=aid,
        job_id=JOB,
        name_key=name_key,
        detached=detached,
        fields={"task": "c-" + aid, "job": JOB},
    )


def ready(scripts: Scripts, aid: str, *, node: str = "n1", worker: str = "w1") -> bool:
    """actor_ready for an actor placed with CPU1 that keeps nothing while alive."""
    return scripts.actor_ready(
        actor_id=aid,
        node_id=node,
        task_id="c-" + aid,
        release_cpu=10_000,
        keep=f"{worker} ; 0",
        fields={"node": node, "worker": worker},
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


def test_create_actor_again_with_the_same_id_changes_nothing(
    scripts: Scripts, redis_client, keys
) -> None:
    assert create(scripts, "a1", name_key="ns:counter") == ("created", "a1")
    redis_client.hset(keys.actor("a1"), "state", "ALIVE")
    # the reply was lost: the same registration again
    assert create(scripts, "a1", name_key="ns:counter") == ("created", "a1")
    assert redis_client.hget(keys.actor("a1"), "state") == b"ALIVE"
    assert redis_client.hget(keys.actor_names, "ns:counter") == b"a1"
    assert len(redis_client.xinfo_groups(keys.mailbox("a1"))) == 1


def test_detached_actor_is_not_listed_under_its_job(scripts: Scripts, redis_client, keys):
    create(scripts, "a1", detached=True)
    assert not redis_client.sismember(keys.job_actors(JOB), "a1")
    assert not redis_client.sismember(keys.job_keys(JOB), keys.actor("a1"))


def test_actor_call_queues_in_order_while_the_actor_lives(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    assert scripts.actor_call(OWNER, [(1, "a1", b"call-1"), (2, "a1", b"call-2")]) == [1, 1]
    entries = redis_client.xrange(keys.mailbox("a1"))
    assert [fields[b"s"] for _, fields in entries] == [b"call-1", b"call-2"]
    assert watermark(redis_client, keys) == 2


def test_resent_actor_call_is_not_appended_twice(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    calls = [(1, "a1", b"call-1"), (2, "a1", b"call-2")]
    scripts.actor_call(OWNER, calls[:1])  # applied before the reply was lost
    assert scripts.actor_call(OWNER, calls) == [0, 1]
    assert scripts.actor_call(OWNER, calls) == [0, 0]
    entries = redis_client.xrange(keys.mailbox("a1"))
    assert [fields[b"s"] for _, fields in entries] == [b"call-1", b"call-2"]


def test_actor_calls_and_tasks_share_the_owner_numbering(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    submit(scripts, [(1, "t1", CPU1, [])])
    assert scripts.actor_call(OWNER, [(1, "a1", b"stale"), (2, "a1", b"call-2")]) == [0, 1]
    assert submit(scripts, [(2, "t2", CPU1, [])]) == 0
    assert watermark(redis_client, keys) == 2


def test_actor_call_to_a_dead_actor_returns_its_death_record(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"died-because", name_key="")
    assert scripts.actor_call(OWNER, [(1, "a1", b"call")]) == [b"died-because"]
    assert redis_client.xlen(keys.mailbox("a1")) == 0


def test_actor_call_to_an_unknown_actor_returns_an_empty_record(scripts: Scripts):
    assert scripts.actor_call(OWNER, [(1, "nobody", b"call")]) == [b""]


def test_actor_ready_gives_back_the_placement_cpu(scripts: Scripts, redis_client, keys):
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    c = claim(scripts, "n1", [CPU1])
    assert c is not None and avail(redis_client, keys, "n1") == {"CPU": 0}
    assert ready(scripts, "a1") is True
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert redis_client.hget(keys.actor("a1"), "state") == b"ALIVE"
    assert redis_client.hget(keys.actor("a1"), "worker") == b"w1"
    assert record(redis_client, keys, "n1", "c-a1") == "w1 ; 0"
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_actor_ready_gives_back_the_placement_cpu_once(scripts: Scripts, redis_client, keys):
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    assert claim(scripts, "n1", [CPU1]) is not None
    assert ready(scripts, "a1") is True
    assert ready(scripts, "a1") is True  # the reply was lost
    assert avail(redis_client, keys, "n1") == {"CPU": 10_000}
    assert wake(redis_client, keys, "n1") == [b"r"]


def test_actor_ready_without_release_keeps_the_reservation(scripts: Scripts, redis_client, keys):
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    assert claim(scripts, "n1", [CPU1]) is not None
    alive = scripts.actor_ready(
        actor_id="a1",
        node_id="n1",
        task_id="c-a1",
        release_cpu=0,
        keep="w1 " + CPU1 + "; 0",
        fields={"node": "n1", "worker": "w1"},
    )
    assert alive is True
    assert avail(redis_client, keys, "n1") == {"CPU": 0}
    assert record(redis_client, keys, "n1", "c-a1") == "w1 " + CPU1 + "; 0"
    assert wake(redis_client, keys, "n1") == []


@pytest.mark.parametrize("gone", ["killed", "record deleted"])
def test_actor_ready_refuses_an_actor_that_is_gone(scripts: Scripts, redis_client, keys, gone):
    create(scripts, "a1")
    if gone == "killed":
        scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="")
    else:
        redis_client.delete(keys.actor("a1"))
    alive = scripts.actor_ready(
        actor_id="a1",
        node_id="n1",
        task_id="c-a1",
        release_cpu=0,
        keep="w1 ; 0",
        fields={"node": "n1"},
    )
    assert alive is False
    actor_state = redis_client.hget(keys.actor("a1"), "state")
    assert actor_state == (b"DEAD" if gone == "killed" else None)  # never brought back to life


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


def test_actor_dead_during_init_of_a_cancelled_creation_task(
    scripts: Scripts, redis_client, keys
) -> None:
    add_node(redis_client, keys, "n1", cpus=1)
    create(scripts, "a1")
    submit_one(scripts, "c-a1")
    assert claim(scripts, "n1", [CPU1], worker="w3") is not None
    assert scripts.cancel("c-a1") == "Rn1 w3"  # the state is now 'Rn1 w3 c'
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


def test_complete_tells_no_owner_that_is_gone(scripts: Scripts, redis_client, keys):
    """An executor's keys went with it: a late result must not bring its inbox back."""
    redis_client.delete(keys.submitted("gone-owner"))
    reply = scripts.complete(
        task_id="t1",
        job_id=JOB,
        owner="gone-owner",
        node_id=None,
        returns=[ReturnValue("t1r1", b"v")],
    )
    assert Scripts.parse_complete(reply)[0] == 1
    assert redis_client.exists(keys.obj("t1r1"))
    assert not redis_client.exists(keys.inbox("gone-owner"))


def test_actor_dead_does_not_bring_back_a_record_deleted_with_its_job(
    scripts: Scripts, redis_client, keys
):
    assert scripts.actor_dead(actor_id="a9", job_id=JOB, death=b"d", name_key="") == ("", "", "")
    assert not redis_client.exists(keys.actor("a9"))


def test_actor_restarting_records_how_the_last_process_ended(scripts: Scripts, redis_client, keys):
    create(scripts, "a1")
    assert scripts.actor_restarting("a1", "killed by signal 9", oom=True)
    fields = redis_client.hgetall(keys.actor("a1"))
    assert fields[b"state"] == b"RESTARTING"
    assert (fields[b"exit"], fields[b"exit_oom"]) == (b"killed by signal 9", b"1")


def test_actor_restarting_leaves_a_dead_or_deleted_actor_alone(
    scripts: Scripts, redis_client, keys
):
    assert not scripts.actor_restarting("gone", "exit code 1", oom=False)
    assert not redis_client.exists(keys.actor("gone"))
    create(scripts, "a1")
    scripts.actor_dead(actor_id="a1", job_id=JOB, death=b"d", name_key="")
    assert not scripts.actor_restarting("a1", "exit code 1", oom=False)
    assert redis_client.hget(keys.actor("a1"), "state") == b"DEAD"


# -- util.queue -------------------------------------------------------------------------------


def queue_keys(keys: Keys, maxsize: int, client: redis.Redis) -> list[str]:
    """A queue's (items, free, meta) keys, made as ``Queue(maxsize)`` makes them."""
    made = [keys.queue("q1"), keys.queue_free("q1"), keys.queue_meta("q1")]
    client.set(made[2], maxsize)
    if maxsize > 0:
        client.rpush(made[1], *([b"1"] * maxsize))
    return made


def test_queue_put_adds_every_item_or_none(scripts: Scripts, redis_client, keys) -> None:
    q = queue_keys(keys, 3, redis_client)
    assert scripts.queue_put(scripts.client, q, True, [b"a", b"b"]) == [1, 2]
    assert scripts.queue_put(scripts.client, q, True, [b"c", b"d"]) == [0, 2]  # one slot left
    assert redis_client.lrange(q[0], 0, -1) == [b"a", b"b"]
    assert redis_client.llen(q[1]) == 1


def test_queue_get_takes_exactly_n_and_gives_their_slots_back(
    scripts: Scripts, redis_client, keys
) -> None:
    q = queue_keys(keys, 3, redis_client)
    scripts.queue_put(scripts.client, q, True, [b"a", b"b", b"c"])
    assert scripts.queue_get(scripts.client, q, 4) == (0, [3])  # too few: nothing taken
    assert scripts.queue_get(scripts.client, q, 2) == (1, [b"a", b"b"])
    assert redis_client.llen(q[1]) == 2


def test_queue_return_puts_items_back_at_the_front(scripts: Scripts, redis_client, keys) -> None:
    q = queue_keys(keys, 0, redis_client)
    scripts.queue_put(scripts.client, q, True, [b"b"])
    scripts.queue_return(scripts.client, q, 0, [b"a"])
    assert redis_client.lrange(q[0], 0, -1) == [b"a", b"b"]


def test_queue_scripts_refuse_a_queue_that_was_shut_down(
    scripts: Scripts, redis_client, keys
) -> None:
    q = queue_keys(keys, 2, redis_client)
    redis_client.delete(*q)
    assert scripts.queue_put(scripts.client, q, True, [b"a"]) == [-1]
    assert scripts.queue_get(scripts.client, q, 1) == (-1, [])
    assert scripts.queue_return(scripts.client, q, 1, [b"a"]) == -1
    assert not redis_client.exists(*q)  # nothing recreated


# -- robustness ------------------------------------------------------------------------------


def test_scripts_survive_script_flush(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2)
    submit_one(scripts, "t1")
    redis_client.script_flush()
    submit_one(scripts, "t2")
    redis_client.script_flush()
    assert claim(scripts, "n1", [CPU1]) is not None
    redis_client.script_flush()
    assert scripts.block("n1", "t1") == 10_000
    redis_client.script_flush()
    assert scripts.cancel("t2") == "removed"
    redis_client.script_flush()
    assert complete(scripts, "t1", [ReturnValue("t1r1", b"v")], node="n1") == 1
    redis_client.script_flush()
    assert scripts.subscribe("wA", ["t1r1"], True) == [True]
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000}


def test_batched_scripts_survive_script_flush(scripts: Scripts, redis_client, keys) -> None:
    redis_client.script_flush()
    batch = scripts.batch()
    scripts.submit(JOB, OWNER, [(1, "t1", CPU1, b"s", [])], pipe=batch)
    batch.command("hset", keys.tag + ":other", "f", "v")
    scripts.submit(JOB, OWNER, [(2, "t2", CPU1, b"s", [])], pipe=batch)
    assert batch.execute() == [1, 1, 1]
    assert ready_tids(redis_client, keys) == ["t1", "t2"]


def test_every_key_carries_the_hash_tag(scripts: Scripts, redis_client, keys) -> None:
    add_node(redis_client, keys, "n1", cpus=2, gpus={"0": 10_000})
    redis_client.hset(keys.nodes, "n1", "{}")
    scripts.heartbeat(keys.nodes, keys.heartbeats, "n1")
    scripts.register_shape("CPU=10000,GPU=5000")
    redis_client.sadd(keys.node_workers("n1"), "w1")
    scripts.wake_for_shape(["n1"])
    scripts.subscribe("wA", ["t1r1"], True)
    submit(
        scripts,
        [(1, "t1", "CPU=10000,GPU=5000", []), (2, "t2", CPU1, ["t1r1", "t1r2"])],
    )
    c = claim(scripts, "n1", ["CPU=10000,GPU=5000"])
    assert c is not None
    scripts.block("n1", "t1")
    scripts.unblock("n1", "t1")
    redis_client.hset(keys.staged("t1r2", "a1"), "h", b"v")
    returns = [ReturnValue("t1r1", b"v"), ReturnValue("t1r2", None, staged_attempt="a1")]
    _, c2, _ = complete_reply(
        scripts, "t1", returns, node="n1", worker_id="w1", claim_next=True, bells=[CPU1]
    )
    assert c2 is not None and c2.task_id == "t2"
    scripts.requeue("n1", "t2", "w1", 1, CPU1)
    c2 = claim(scripts, "n1", [CPU1], "w2")
    assert c2 is not None
    complete(scripts, "t2", [ReturnValue("t2r1", b"w")], node="n1", worker_id="w2")
    entry_id = delivered_call(scripts, redis_client, keys)
    complete(scripts, "call1", [], actor_id="a1", entry_id=entry_id)
    all_keys = [k.decode() for k in redis_client.keys("*")]
    assert all_keys, "the cycle wrote no keys"
    assert [k for k in all_keys if not k.startswith(keys.tag)] == []
    # and the cycle left the node as it found it
    assert avail(redis_client, keys, "n1") == {"CPU": 20_000, "GPU": 10_000}
