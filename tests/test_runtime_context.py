"""``get_runtime_context()`` and the id classes, as Ray 2.60 has them: the
``get_*_id()`` methods return hex strings, the deprecated properties return
id objects (``JobID``, ``TaskID``, ``NodeID``, ``ActorID``) with a
``RayDeprecationWarning``; against real processes."""

from __future__ import annotations

import asyncio
import pickle

import pytest

import redray
from redray.context import RayDeprecationWarning


@redray.remote
def task_ids() -> tuple[object, object, str | None, str]:
    ctx = redray.get_runtime_context()
    return ctx.task_id, ctx.node_id, ctx.get_task_id(), ctx.get_node_id()


@redray.remote
def task_context_dict() -> dict[str, object]:
    return redray.get_runtime_context().get()


@redray.remote
class Introspect:
    def actor_id(self) -> object:
        return redray.get_runtime_context().actor_id

    def name(self) -> str | None:
        return redray.get_runtime_context().get_actor_name()

    def context_dict(self) -> dict[str, object]:
        return redray.get_runtime_context().get()

    def task_name(self) -> str | None:
        return redray.get_runtime_context().get_task_name()


@redray.remote
def task_names() -> tuple[str | None, str | None]:
    context = redray.get_runtime_context()
    return context.get_task_name(), context.get_task_function_name()


# -- task names, as measured on Ray 2.60 ------------------------------------------------------


def test_get_task_name_in_a_task_is_the_functions_name(cluster) -> None:
    assert redray.get(task_names.remote(), timeout=30) == ("task_names", f"{__name__}.task_names")


def test_get_task_name_in_a_task_is_its_name_option_when_given(cluster) -> None:
    named = task_names.options(name="custom").remote()
    assert redray.get(named, timeout=30)[0] == "custom"


def test_get_task_name_in_an_actor_call_is_class_dot_method(cluster) -> None:
    actor = Introspect.remote()
    assert redray.get(actor.task_name.remote(), timeout=30) == "Introspect.task_name"


def test_get_task_name_in_an_actor_call_is_its_name_option_when_given(cluster) -> None:
    actor = Introspect.remote()
    named = actor.task_name.options(name="custom call").remote()
    assert redray.get(named, timeout=30) == "custom call"
    assert redray.get(actor.task_name.remote(), timeout=30) == "Introspect.task_name"


def test_an_actor_method_name_option_that_is_not_a_string_is_refused(cluster) -> None:
    actor = Introspect.remote()
    with pytest.raises(TypeError, match="name for actor method task_name must be a string"):
        actor.task_name.options(name=3)


def test_get_task_name_in_a_driver_is_none(cluster) -> None:
    assert redray.get_runtime_context().get_task_name() is None


@redray.remote
class AsyncIntrospect:
    def __init__(self) -> None:
        self.second_started = asyncio.Event()

    async def first(self) -> tuple[str | None, str | None, str | None]:
        before = redray.get_runtime_context().get_task_id()
        await self.second_started.wait()  # the second call runs meanwhile
        context = redray.get_runtime_context()
        return before, context.get_task_id(), context.get_task_name()

    async def second(self) -> str | None:
        self.second_started.set()
        await asyncio.sleep(0)
        return redray.get_runtime_context().get_task_id()


def test_calls_awaited_at_once_in_an_async_actor_each_see_their_own_task(cluster) -> None:
    actor = AsyncIntrospect.remote()
    first = actor.first.remote()
    second = actor.second.remote()
    before, after, name = redray.get(first, timeout=30)
    assert before == after == first.task_id().hex()
    assert name == "AsyncIntrospect.first"
    assert redray.get(second, timeout=30) == second.task_id().hex()


# -- the deprecated properties ---------------------------------------------------------------


def test_job_id_property_is_a_job_id_whose_hex_is_get_job_id(cluster) -> None:
    ctx = redray.get_runtime_context()
    with pytest.warns(DeprecationWarning):
        job_id = ctx.job_id
    assert isinstance(job_id, redray.JobID)
    assert job_id.hex() == ctx.get_job_id()


def test_job_id_property_warns_that_it_is_deprecated_for_get_job_id(cluster) -> None:
    with pytest.warns(RayDeprecationWarning, match=r"Use get_job_id\(\) instead"):
        redray.get_runtime_context().job_id  # noqa: B018


def test_node_id_property_in_a_task_is_the_node_id_of_its_node(cluster) -> None:
    _, node_id, _, node_hex = redray.get(task_ids.remote(), timeout=30)
    assert isinstance(node_id, redray.NodeID)
    assert node_id.hex() == node_hex == cluster.node_id


def test_task_id_property_in_a_task_is_the_task_id_of_get_task_id(cluster) -> None:
    task_id, _, task_hex, _ = redray.get(task_ids.remote(), timeout=30)
    assert isinstance(task_id, redray.TaskID)
    assert task_hex and task_id.hex() == task_hex


def test_task_id_property_in_a_driver_is_an_assertion_error(cluster) -> None:
    # Ray: "This method is only available when the process is a worker"
    with pytest.warns(DeprecationWarning), pytest.raises(AssertionError, match="worker"):
        redray.get_runtime_context().task_id  # noqa: B018


def test_actor_id_property_in_a_driver_is_an_assertion_error(cluster) -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(AssertionError, match="worker"):
        redray.get_runtime_context().actor_id  # noqa: B018


def test_actor_id_property_in_an_actor_is_the_actor_id_of_its_handle(cluster) -> None:
    actor = Introspect.remote()
    actor_id = redray.get(actor.actor_id.remote(), timeout=30)
    assert isinstance(actor_id, redray.ActorID)
    assert actor_id.hex() == actor._actor_id


def test_current_placement_group_id_property_is_nil(cluster) -> None:
    with pytest.warns(DeprecationWarning, match=r"get_placement_group_id\(\)"):
        pg_id = redray.get_runtime_context().current_placement_group_id
    assert isinstance(pg_id, redray.PlacementGroupID) and pg_id.is_nil()


# -- the getters -------------------------------------------------------------------------------


def test_get_placement_group_id_outside_a_placement_group_is_none(cluster) -> None:
    assert redray.get_runtime_context().get_placement_group_id() is None


def test_get_actor_name_of_an_unnamed_actor_is_an_empty_string(cluster) -> None:
    assert redray.get(Introspect.remote().name.remote(), timeout=30) == ""


def test_current_actor_outside_an_actor_is_rays_runtime_error(cluster) -> None:
    with pytest.raises(RuntimeError, match="only available in an actor"):
        redray.get_runtime_context().current_actor  # noqa: B018


def test_get_in_a_driver_gives_job_and_node_id_objects_and_the_namespace(cluster) -> None:
    ctx = redray.get_runtime_context()
    with pytest.warns(DeprecationWarning, match=r"get_xxx_id\(\)"):
        info = ctx.get()
    assert set(info) == {"job_id", "node_id", "namespace"}
    assert info["job_id"] == redray.JobID.from_hex(ctx.get_job_id())
    assert isinstance(info["node_id"], redray.NodeID)
    assert info["namespace"] == ctx.namespace


def test_get_in_a_task_adds_the_task_id(cluster) -> None:
    info = redray.get(task_context_dict.remote(), timeout=30)
    assert set(info) == {"job_id", "node_id", "namespace", "task_id"}
    assert isinstance(info["task_id"], redray.TaskID)


def test_get_in_an_actor_adds_the_actor_id(cluster) -> None:
    actor = Introspect.remote()
    info = redray.get(actor.context_dict.remote(), timeout=30)
    assert info["actor_id"] == redray.ActorID.from_hex(actor._actor_id)
    assert isinstance(info["task_id"], redray.TaskID)


# -- the id classes ----------------------------------------------------------------------------


def test_id_classes_are_exported_where_ray_exports_them() -> None:
    for name in ("JobID", "TaskID", "NodeID", "ActorID", "WorkerID", "PlacementGroupID"):
        assert name in redray.__all__ and isinstance(getattr(redray, name), type)
    assert redray.ObjectID is redray.ObjectRef


def test_ids_are_equal_and_hash_alike_by_class_and_value_only() -> None:
    a, b = redray.JobID.from_hex("0000002a"), redray.JobID.from_int(42)
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != "0000002a"  # as in Ray: an id never equals its hex string
    assert redray.NodeID.from_hex("ab") != redray.WorkerID.from_hex("ab")


def test_nil_ids_are_nil_and_others_are_not() -> None:
    assert redray.NodeID.nil().is_nil() and redray.JobID.nil().hex() == "ffffffff"
    assert not redray.NodeID.from_random().is_nil()


def test_id_repr_names_the_class_and_the_hex() -> None:
    assert repr(redray.JobID.from_int(1)) == "JobID(00000001)"
    assert str(redray.ActorID.from_hex("a1b2")) == "ActorID(a1b2)"


def test_id_binary_round_trips_through_from_binary() -> None:
    node = redray.NodeID.from_random()
    assert redray.NodeID.from_binary(node.binary()) == node
    assert pickle.loads(pickle.dumps(node)) == node


def test_id_constructor_takes_bytes_as_rays_does() -> None:
    assert redray.JobID(b"\x00\x00\x00\x07").hex() == "00000007"
    with pytest.raises(TypeError, match="expected bytes"):
        redray.JobID("00000007")  # type: ignore[arg-type]
