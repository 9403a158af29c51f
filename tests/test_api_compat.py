"""Ray Core API behaviour beyond the tutorials (issue 9), against real processes."""

from __future__ import annotations

import pytest

import redray
from redray import session
from redray.settings import Settings


@redray.remote
class Counter:
    def __init__(self) -> None:
        self.n = 0


def test_init_returns_a_context_read_by_key_like_rays(settings: Settings) -> None:
    ctx = redray.init(address=settings.to_url())
    assert ctx["address"] == ctx.address_info["address"]
    assert "node_ip_address" in ctx
    assert ctx.dashboard_url == ""  # no dashboard yet
    assert ctx.ray_version == redray.__version__


def test_init_context_shows_no_password() -> None:
    # a private cluster's server has a random password
    ctx = redray.init(num_cpus=1)
    password = session.current_runtime().settings.password
    assert password
    shown = f"{ctx.address_info} {ctx!r} {redray.get_runtime_context().gcs_address}"
    assert password not in shown
    assert ctx["address"].startswith("redis://127.0.0.1:")


def test_init_context_as_a_with_block_shuts_down_at_its_end(settings: Settings) -> None:
    with redray.init(address=settings.to_url()):
        assert redray.is_initialized()
    assert not redray.is_initialized()


def test_get_runtime_context_before_init_starts_a_local_cluster() -> None:
    assert not redray.is_initialized()
    ctx = redray.get_runtime_context()
    assert redray.is_initialized()
    assert ctx.get_job_id()


def test_actor_name_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="name"):
        Counter.options(name=object())


def test_empty_actor_name_or_namespace_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="name"):
        Counter.options(name="")
    with pytest.raises(ValueError, match="namespace"):
        Counter.options(namespace="")


@redray.remote
class Shadowed:
    def __init__(self) -> None:
        # an instance attribute with a method's name: Ray still calls the method
        self.value = "attribute"

    def value(self) -> str:
        return "method"

    @staticmethod
    def twice(x: int) -> int:
        return 2 * x


def test_an_instance_attribute_does_not_hide_an_actor_method(cluster) -> None:
    actor = Shadowed.remote()
    assert redray.get(actor.value.remote(), timeout=30) == "method"
    assert redray.get(actor.twice.remote(4), timeout=30) == 8


def test_list_named_actors_lists_this_namespace_or_all(cluster) -> None:
    here = Counter.options(name="here").remote()
    there = Counter.options(name="there", namespace="elsewhere").remote()
    Counter.remote()  # unnamed: not listed
    redray.get([here.__ray_ready__.remote(), there.__ray_ready__.remote()], timeout=30)
    assert redray.util.list_named_actors() == ["here"]
    listed = redray.util.list_named_actors(all_namespaces=True)
    namespace = redray.get_runtime_context().namespace
    assert {"name": "here", "namespace": namespace} in listed
    assert {"name": "there", "namespace": "elsewhere"} in listed
    assert len(listed) == 2


def test_as_future_gives_an_asyncio_future_of_the_value(cluster) -> None:
    import asyncio

    @redray.remote
    def seven() -> int:
        return 7

    async def main() -> int:
        fut = seven.remote().as_future()
        assert isinstance(fut, asyncio.Future)
        return await fut

    assert asyncio.run(main()) == 7


def test_actor_builtins_ray_ready_and_ray_call(cluster) -> None:
    counter = Counter.remote()
    assert redray.get(counter.__ray_ready__.remote(), timeout=30) is True

    def bump(actor: Counter, by: int) -> int:
        actor.n += by
        return actor.n

    assert redray.get(counter.__ray_call__.remote(bump, 5), timeout=30) == 5
    assert redray.get(counter.__ray_call__.remote(bump, 2), timeout=30) == 7


def test_runtime_context_is_importable_from_rays_module_path(cluster) -> None:
    from redray.runtime_context import RuntimeContext, get_runtime_context

    ctx = get_runtime_context()
    assert isinstance(ctx, RuntimeContext)
    assert ctx.get_job_id() == redray.get_runtime_context().get_job_id()


@redray.remote
class Calls:
    def add(self, a: int, b: int = 1) -> int:
        return a + b

    def many(self, *args: int, **kwargs: int) -> int:
        return sum(args) + sum(kwargs.values())

    @staticmethod
    def neg(x: int) -> int:
        return -x


def test_actor_method_calls_are_checked_against_the_signature_at_the_call_site(cluster) -> None:
    actor = Calls.remote()
    with pytest.raises(TypeError, match="add"):
        actor.add.remote()  # missing a
    with pytest.raises(TypeError, match="add"):
        actor.add.remote(1, 2, 3)  # one too many
    with pytest.raises(TypeError, match="add"):
        actor.add.remote(1, c=2)  # no such keyword
    with pytest.raises(TypeError, match="neg"):
        actor.neg.options(num_returns=1).remote(1, 2)
    assert redray.get(actor.add.remote(2), timeout=30) == 3
    assert redray.get(actor.add.remote(a=2, b=5), timeout=30) == 7
    assert redray.get(actor.many.remote(1, 2, x=3), timeout=30) == 6
    assert redray.get(actor.neg.remote(4), timeout=30) == -4
