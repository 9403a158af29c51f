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


@redray.remote
def leaf() -> int:
    return 0


@redray.remote
def middle() -> int:
    return redray.get(leaf.remote())


@redray.remote
def top() -> int:
    return redray.get(middle.remote())


def test_nested_tasks_are_not_held_up_by_a_backlog_of_top_level_tasks(
    settings: Settings, node_factory
) -> None:
    # Ray's fair-queueing test: on one CPU, each of many f() waits for g(),
    # which waits for h(); submitted behind the whole backlog of f(), the
    # g() and h() would only start once every f() had started
    node_factory(num_cpus=1)
    redray.init(address=settings.to_url())
    try:
        refs = [top.remote() for _ in range(200)]
        ready, _ = redray.wait(refs, num_returns=len(refs), timeout=120)
        assert len(ready) == len(refs)
        assert redray.get(refs) == [0] * len(refs)
    finally:
        redray.shutdown()


@redray.remote
class Leaver:
    def ping(self) -> str:
        return "pong"

    def leave(self) -> None:
        try:
            redray.actor.exit_actor()
        except Exception:  # noqa: BLE001 - exit_actor is not stopped by this
            pass


@redray.remote
class AsyncLeaver:
    async def ping(self) -> str:
        return "pong"

    async def leave(self) -> None:
        redray.actor.exit_actor()


@pytest.mark.parametrize("cls", [Leaver, AsyncLeaver], ids=["sync", "async"])
def test_exit_actor_ends_the_actor_and_fails_its_call_and_the_queued_ones(cluster, cls) -> None:
    actor = cls.options(max_restarts=1).remote()
    assert redray.get(actor.ping.remote(), timeout=30) == "pong"
    leaving, queued = actor.leave.remote(), actor.ping.remote()
    # an async actor may run the queued call before leave() is done with
    for ref in (leaving, queued) if cls is Leaver else (leaving,):
        with pytest.raises(redray.exceptions.ActorDiedError):
            redray.get(ref, timeout=30)
    with pytest.raises(redray.exceptions.ActorDiedError, match="exit_actor"):
        redray.get(actor.ping.remote(), timeout=30)  # not restarted


def test_exit_actor_outside_an_actor_is_a_type_error(cluster) -> None:
    with pytest.raises(TypeError, match="exit_actor"):
        redray.actor.exit_actor()


def test_on_completed_calls_back_with_the_value_or_the_error(cluster) -> None:
    import threading

    @redray.remote
    def value() -> int:
        return 41

    @redray.remote
    def broken() -> None:
        raise KeyError("broken")

    got: list = []
    called = threading.Event()

    def callback(result) -> None:
        got.append(result)
        if len(got) == 2:
            called.set()

    value.remote()._on_completed(callback)
    broken.remote()._on_completed(callback)
    assert called.wait(30)
    assert 41 in got
    assert any(isinstance(r, KeyError) for r in got)


@redray.remote
class SyncAwaiter:
    def run_coroutine(self, refs: list) -> int:
        import asyncio

        async def total() -> int:
            return sum([await ref for ref in refs])

        return asyncio.run(total())


def test_await_on_refs_inside_a_sync_actor_method(cluster) -> None:
    actor = SyncAwaiter.remote()
    refs = [redray.put(i) for i in range(4)]
    assert redray.get(actor.run_coroutine.remote(refs), timeout=30) == 6


def test_a_taken_actor_name_raises_actor_already_exists_error(cluster) -> None:
    Counter.options(name="taken").remote()
    with pytest.raises(redray.exceptions.ActorAlreadyExistsError, match="taken"):
        Counter.options(name="taken").remote()


def test_get_of_a_dynamic_generator_task_is_a_dynamic_object_ref_generator(cluster) -> None:
    @redray.remote(num_returns="dynamic")
    def two():
        yield 1
        yield 2

    refs = redray.get(two.remote(), timeout=30)
    assert isinstance(refs, redray.DynamicObjectRefGenerator)
    assert redray.get(list(refs), timeout=30) == [1, 2]
