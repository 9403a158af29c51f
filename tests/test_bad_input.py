"""Garbage written straight into redray's keys, streams and channels: each item
becomes a dead letter (or a clear error on the caller's ObjectRef), its slots are
given back, and the node, its executors and actors keep serving. Against a real
server and a real node; the property-based tests throw random bytes and random
field maps at the streams."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import pytest
from conftest import wait_for, worker_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import redray
from redray import dead_letters
from redray import task_spec as ts
from redray.api import current_runtime
from redray.constants import Keys
from redray.exceptions import RaySystemError

CPU1 = "CPU=10000"


@redray.remote
def inc(x: int) -> int:
    return x + 1


@redray.remote
class Echo:
    def echo(self, value: object) -> object:
        return value


@pytest.fixture
def keys(settings) -> Keys:
    return Keys(settings.prefix)


@pytest.fixture
def echo(cluster):
    """One actor for every example of a property-based test."""
    return Echo.remote()


def _serves() -> None:
    """The cluster still runs tasks and gives every CPU back afterwards."""
    assert redray.get([inc.remote(i) for i in range(5)], timeout=30) == [1, 2, 3, 4, 5]
    wait_for(lambda: redray.available_resources().get("CPU") == 2)


def _letters(client, keys: Keys) -> list[dict]:
    return dead_letters.read(client, keys, 1000)


def _wait_for_letter(client, keys: Keys, **match: str) -> dict:
    found: list[dict] = []

    def seen() -> bool:
        found[:] = [
            d for d in _letters(client, keys) if all(d.get(k) == v for k, v in match.items())
        ]
        return bool(found)

    wait_for(seen)
    return found[0]


def _queue_garbage_task(client, keys: Keys, task_id: str, spec: bytes, shape: str = CPU1) -> None:
    """A 'task' that never went through submit.lua: a spec, a ready entry, a bell
    token (in one transaction, so no executor sees the entry before the state it needs)."""
    member = f"{shape}|00000000000000|{task_id}"
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(keys.task_spec, task_id, spec)
        pipe.hset(keys.task_state, task_id, "Q" + member)
        pipe.zadd(keys.ready, {member: 0})
        pipe.rpush(keys.bell(shape), "1")
        pipe.execute()


# -- task specs ----------------------------------------------------------------------------


def test_malformed_task_spec_becomes_a_dead_letter_and_the_node_serves_on(
    cluster, redis_client, keys
):
    _serves()  # the CPU shape is known to the executors
    _queue_garbage_task(redis_client, keys, "g" * 20, b"\x80\x05not a pickle at all")
    letter = _wait_for_letter(redis_client, keys, task="g" * 20)
    assert letter["source"] == keys.task_spec
    assert "malformed task spec" in letter["reason"]
    assert letter["data"].startswith(b"\x80\x05not a pickle")
    _serves()
    assert redis_client.hlen(keys.node_running(cluster.node_id)) == 0


def test_task_spec_with_fields_of_the_wrong_type_gives_its_slots_back(cluster, redis_client, keys):
    _serves()
    wrong = pickle.dumps((ts.SPEC_VERSION, tuple(range(13))))
    _queue_garbage_task(redis_client, keys, "h" * 20, wrong)
    letter = _wait_for_letter(redis_client, keys, task="h" * 20)
    assert "task_id" in letter["reason"] and "not text" in letter["reason"]
    _serves()
    assert not redis_client.hexists(keys.task_state, "h" * 20)


def test_ready_entries_that_name_no_task_are_dropped(cluster, redis_client, keys):
    _serves()
    redis_client.zadd(keys.ready, {f"{CPU1}|garbage": 0, f"{CPU1}|": 0, "no shape at all": 0})
    redis_client.rpush(keys.bell(CPU1), "1", "1")
    wait_for(lambda: redis_client.zcard(keys.ready) <= 1)  # the unclaimable one may stay
    _serves()


def test_function_whose_module_is_missing_on_the_worker_fails_its_ref_clearly(
    cluster, tmp_path, monkeypatch
):
    (tmp_path / "driver_only_module.py").write_text("def answer():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_module  # noqa: PLC0415 - only the driver has it

    try:
        task = redray.remote(driver_only_module.answer)
        with pytest.raises(RaySystemError, match="importable") as info:
            redray.get(task.remote(), timeout=30)
        assert "driver_only_module" in str(info.value)
    finally:
        sys.modules.pop("driver_only_module", None)
    _serves()


# -- actor mailboxes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {b"s": b"random bytes, not a spec"},
        {b"s": pickle.dumps((ts.SPEC_VERSION, tuple(range(13))))},
        {b"x": b"no spec field"},
    ],
    ids=["garbage spec", "wrong field types", "no spec field"],
)
def test_malformed_mailbox_entry_becomes_a_dead_letter_and_the_actor_serves_on(
    cluster, redis_client, keys, fields
):
    actor = Echo.remote()
    assert redray.get(actor.echo.remote(1), timeout=30) == 1
    redis_client.xadd(keys.mailbox(actor._actor_id), fields)
    assert redray.get(actor.echo.remote(2), timeout=30) == 2
    letter = _wait_for_letter(redis_client, keys, actor=actor._actor_id)
    assert letter["source"] == keys.mailbox(actor._actor_id)
    assert redis_client.xlen(keys.mailbox(actor._actor_id)) == 0  # acknowledged, not re-read


# -- shapes, channels, inboxes, registrations ---------------------------------------------


def test_foreign_shapes_do_not_stop_executors_from_learning_new_ones(cluster, redis_client, keys):
    _serves()
    redis_client.hset(keys.shapes, mapping={"CPU=abc": 1, "zz": 1, "=": 1})
    redis_client.rpush(keys.node_wake(cluster.node_id), "s")
    half = inc.options(num_cpus=0.5)  # a shape the executors have never seen
    assert redray.get(half.remote(1), timeout=30) == 2


def test_binary_garbage_on_the_wake_lists_channels_and_control_stream_is_ignored(
    cluster, redis_client, keys
):
    actor = Echo.remote()
    assert redray.get(actor.echo.remote(0), timeout=30) == 0
    for garbage in (b"\xff\xfe\x00garbage", b"kill", b"cancel ", b"kill nobody"):
        redis_client.publish(keys.actor_channel(actor._actor_id), garbage)
        redis_client.rpush(keys.node_wake(cluster.node_id), garbage)
        redis_client.rpush(keys.bell(CPU1), garbage)
        redis_client.xadd(keys.node_control(cluster.node_id), {"r": garbage})
        redis_client.xadd(keys.node_control(cluster.node_id), {"junk": garbage})
    _serves()
    assert redray.get(actor.echo.remote(3), timeout=30) == 3
    assert cluster.process.poll() is None


def test_garbage_completion_notices_are_dead_letters_and_get_still_works(
    cluster, redis_client, keys
):
    inbox = current_runtime().keys.inbox(current_runtime().worker_id)
    redis_client.rpush(inbox, b"", b"\xff\xfe", b"o\0", b"t" + b"z" * 20 + b"\0", b"x1234\0data")
    assert redray.get(inc.remote(1), timeout=30) == 2
    assert len([d for d in _letters(redis_client, keys) if d["source"] == inbox]) == 5


def test_foreign_node_registrations_are_left_out_of_cluster_listings(cluster, redis_client, keys):
    redis_client.hset(
        keys.nodes,
        mapping={"junk1": "{not json", "junk2": "[1, 2]", "junk3": '{"node_id": 5}'},
    )
    assert [n["NodeID"] for n in redray.nodes()] == [cluster.node_id]
    assert redray.cluster_resources()["CPU"] == 2


def test_garbage_in_a_resource_hash_does_not_break_available_resources(cluster, redis_client, keys):
    redis_client.hset(keys.node_avail(cluster.node_id), "junk", "not a number")
    assert redray.available_resources()["CPU"] == 2
    _serves()


def test_dead_letters_command_lists_what_was_dropped(cluster, settings, redis_client, keys):
    dead_letters.record(redis_client, keys, keys.task_spec, "a reason", b"bytes", task="t" * 20)
    done = subprocess.run(
        [sys.executable, "-m", "redray.cli.main", "dead-letters", "--address", settings.to_url()],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert keys.task_spec in done.stdout and "t" * 20 in done.stdout
    assert "a reason" in done.stdout


# -- property-based: random bytes and field maps at the streams ----------------------------

RANDOM = settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@RANDOM
@given(
    fields=st.dictionaries(
        st.sampled_from([b"s", b"x", b"\xff", b"spec"]) | st.binary(min_size=1, max_size=6),
        st.binary(max_size=80),
        min_size=1,
        max_size=4,
    )
)
def test_random_field_maps_in_a_mailbox_never_stop_the_actor(echo, redis_client, keys, fields):
    redis_client.xadd(keys.mailbox(echo._actor_id), fields)
    assert redray.get(echo.echo.remote(fields), timeout=30) == fields


@RANDOM
@given(spec=st.binary(max_size=300), tid=st.text("0123456789abcdef", min_size=1, max_size=24))
def test_random_bytes_as_task_specs_never_stop_the_node(cluster, redis_client, keys, spec, tid):
    _queue_garbage_task(redis_client, keys, tid, spec)
    assert redray.get(inc.remote(1), timeout=30) == 2
    wait_for(lambda: not redis_client.hexists(keys.task_spec, tid))
    wait_for(lambda: redray.available_resources().get("CPU") == 2)


@RANDOM
@given(notice=st.binary(max_size=120))
def test_random_notices_in_the_inbox_never_break_get(cluster, redis_client, notice):
    redis_client.rpush(current_runtime().inbox.key, notice)
    assert redray.get(inc.remote(2), timeout=30) == 3


def test_the_node_survives_a_flood_of_garbage(cluster, redis_client, keys):
    """Many kinds at once, then ordinary work: nothing stuck, nothing leaked."""
    actor = Echo.remote()
    assert redray.get(actor.echo.remote("up"), timeout=30) == "up"
    specs_before = redis_client.hkeys(keys.task_spec)  # the actor's creation task
    running_before = redis_client.hkeys(keys.node_running(cluster.node_id))
    for i in range(50):
        _queue_garbage_task(redis_client, keys, f"{i:020x}", bytes([i]) * i)
        redis_client.xadd(keys.mailbox(actor._actor_id), {b"s": bytes([i]) * (i + 1)})
    script = textwrap.dedent(
        """
        import sys, redray
        redray.init(address=sys.argv[1])
        print(redray.get(redray.remote(lambda x: x * 2).remote(21), timeout=60))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, current_runtime().settings.to_url()],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "42"
    assert redray.get(actor.echo.remote("still up"), timeout=30) == "still up"
    _serves()
    assert redis_client.hkeys(keys.task_spec) == specs_before
    assert redis_client.hkeys(keys.node_running(cluster.node_id)) == running_before
