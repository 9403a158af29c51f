"""The task and object API, with Ray's semantics, against real processes."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import redray
from redray.exceptions import GetTimeoutError, RayTaskError, TaskCancelledError


@redray.remote
def add(x, y=0):
    return x + y


@redray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@redray.remote
def touch(path):
    open(path, "w").close()


@redray.remote(num_returns=3)
def three():
    return 1, 2, 3


@redray.remote(num_returns=2)
def wrong_count():
    return 1, 2, 3


@redray.remote
def fail(message):
    raise ValueError(message)


class CustomError(Exception):
    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


@redray.remote
def fail_custom():
    raise CustomError("custom", 42)


@redray.remote
def kind_of(x):
    return type(x).__name__


@redray.remote
def get_nested(refs):
    return redray.get(refs[0])


@redray.remote
def free_cpus():
    return redray.available_resources().get("CPU", 0)


@redray.remote(num_cpus=2)
def parent_holding_all_cpus():
    return redray.get(free_cpus.remote())


@redray.remote
def make_child_refs():
    return [add.remote(20, 1)]


@redray.remote
def context():
    ctx = redray.get_runtime_context()
    return ctx.get_task_id(), ctx.get_job_id(), ctx.get_node_id(), ctx.get_assigned_resources()


@redray.remote
def unpicklable_result():
    return threading.Lock()


# -- remote functions ------------------------------------------------------------------


def test_remote_returns_an_object_ref(cluster):
    ref = add.remote(1, 2)
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref) == 3


def test_calling_a_remote_function_directly_is_a_type_error(cluster):
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        add(1, 2)


def test_kwargs_are_passed(cluster):
    assert redray.get(add.remote(1, y=5)) == 6


def test_options_override_per_call(cluster):
    assert redray.get(add.options(num_cpus=0.5).remote(2, 2)) == 4
    assert len(three.options(num_returns=3).remote()) == 3


def test_unknown_option_is_a_value_error_at_decoration_time():
    with pytest.raises(ValueError, match="foo"):
        redray.remote(foo=1)(lambda: None)


def test_unknown_option_is_a_value_error_in_options():
    with pytest.raises(ValueError, match="foo"):
        add.options(foo=1)


def test_negative_resources_are_a_value_error():
    with pytest.raises(ValueError):
        add.options(num_cpus=-1)
    with pytest.raises(ValueError):
        add.options(resources={"custom": -2})


def test_cpu_in_resources_is_a_value_error():
    with pytest.raises(ValueError, match="num_cpus"):
        add.options(resources={"CPU": 1})


def test_wrong_arity_is_a_type_error_at_remote_time(cluster):
    with pytest.raises(TypeError):
        add.remote(1, 2, 3)


# -- num_returns -----------------------------------------------------------------------


def test_num_returns_zero_returns_none_and_still_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    assert touch.options(num_returns=0).remote(str(marker)) is None
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()


def test_num_returns_n_gives_n_refs(cluster):
    refs = three.remote()
    assert len(refs) == 3
    assert [redray.get(r) for r in refs] == [1, 2, 3]


def test_num_returns_mismatch_raises_value_error_on_get(cluster):
    first, _ = wrong_count.remote()
    with pytest.raises(ValueError) as info:
        redray.get(first)
    assert isinstance(info.value, RayTaskError)


# -- ordering, arguments ----------------------------------------------------------------


def test_results_keep_the_order_asked_for(cluster):
    refs = [sleep_then.remote(0.3 - 0.1 * i, i) for i in range(3)]
    assert redray.get(refs) == [0, 1, 2]


def test_top_level_refs_are_resolved_to_values(cluster):
    assert redray.get(kind_of.remote(redray.put(5))) == "int"


def test_nested_refs_are_passed_as_refs(cluster):
    assert redray.get(kind_of.remote([redray.put(5)])) == "list"
    assert redray.get(get_nested.remote([redray.put(7)])) == 7


def test_same_ref_passed_twice(cluster):
    ref = redray.put(4)
    assert redray.get(add.remote(ref, ref)) == 8


def test_chained_tasks(cluster):
    ref = add.remote(1)
    for _ in range(20):
        ref = add.remote(ref, 1)
    assert redray.get(ref) == 21


def test_blocked_get_gives_the_cpu_back(cluster):
    # the parent holds both CPUs; its child can only run if the parent's
    # blocked get released them, and then it sees one CPU free (its own taken)
    assert redray.get(parent_holding_all_cpus.remote(), timeout=30) == 1.0


def test_refs_returned_inside_results_resolve(cluster):
    (inner,) = redray.get(make_child_refs.remote())
    assert redray.get(inner) == 21


def test_put_of_a_list_of_refs(cluster):
    holder = redray.put([add.remote(1, 1)])
    (inner,) = redray.get(holder)
    assert redray.get(inner) == 2


# -- put / get --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -7, 3.5, "text", b"bytes", None, {"a": [1, 2]}, (1, "x"), b"x" * 5_000_000],
    ids=lambda v: type(v).__name__,
)
def test_values_round_trip_through_put_and_get(cluster, value):
    assert redray.get(redray.put(value)) == value


def test_numpy_arrays_round_trip(cluster):
    for array in (np.arange(12).reshape(3, 4), np.float64(3.0) * np.ones(()), np.arange(20)[::3]):
        back = redray.get(redray.put(array))
        assert np.array_equal(back, array)
        assert back.dtype == array.dtype


def test_put_of_an_object_ref_is_a_type_error(cluster):
    with pytest.raises(TypeError):
        redray.put(redray.put(1))


def test_get_of_a_list_and_of_an_empty_list(cluster):
    assert redray.get([redray.put(1), redray.put(2)]) == [1, 2]
    assert redray.get([]) == []


def test_get_timeout_raises_get_timeout_error_which_is_a_timeout_error(cluster):
    ref = sleep_then.remote(5, 1)
    with pytest.raises(GetTimeoutError) as info:
        redray.get(ref, timeout=0.3)
    assert isinstance(info.value, TimeoutError)


def test_get_of_a_non_ref_is_a_value_error(cluster):
    with pytest.raises(ValueError):
        redray.get("not a ref")


# -- errors -----------------------------------------------------------------------------


def test_task_error_is_both_ray_task_error_and_the_original_class(cluster):
    with pytest.raises(ValueError) as info:
        redray.get(fail.remote("bad input"))
    assert isinstance(info.value, RayTaskError)
    text = str(info.value)
    assert "bad input" in text and "fail" in text and "Traceback" in text


def test_custom_exception_keeps_its_attributes(cluster):
    with pytest.raises(CustomError) as info:
        redray.get(fail_custom.remote())
    assert info.value.code == 42


def test_failed_dependency_fails_the_dependant_with_the_original_error(cluster):
    with pytest.raises(ValueError, match="upstream"):
        redray.get(add.remote(fail.remote("upstream"), 1))


def test_unpicklable_argument_names_the_function_and_argument(cluster):
    with pytest.raises(TypeError) as info:
        add.remote(threading.Lock(), 1)
    assert "add" in str(info.value) and "#0" in str(info.value)


def test_unpicklable_result_names_the_function(cluster):
    with pytest.raises(TypeError, match="unpicklable_result"):
        redray.get(unpicklable_result.remote())


# -- wait -------------------------------------------------------------------------------


def test_wait_on_a_non_list_is_a_type_error(cluster):
    ref = redray.put(1)
    with pytest.raises(TypeError):
        redray.wait(ref)
    with pytest.raises(TypeError):
        redray.wait((ref,))


def test_wait_with_duplicates_or_bad_num_returns_is_a_value_error(cluster):
    ref = redray.put(1)
    with pytest.raises(ValueError):
        redray.wait([ref, ref])
    with pytest.raises(ValueError):
        redray.wait([ref], num_returns=0)
    with pytest.raises(ValueError):
        redray.wait([ref], num_returns=2)


def test_wait_returns_num_returns_ready_in_input_order(cluster):
    refs = [redray.put(i) for i in range(4)]
    ready, rest = redray.wait(refs, num_returns=2)
    assert ready == refs[:2] and rest == refs[2:]


def test_wait_returns_the_fast_tasks_first(cluster):
    refs = [sleep_then.remote(s, s) for s in (0.1, 0.3, 20, 30)]
    ready, rest = redray.wait(refs, num_returns=2, timeout=None)
    assert sorted(redray.get(ready)) == [0.1, 0.3]
    assert set(rest) == set(refs[2:])


def test_wait_timeout_returns_the_partial_split(cluster):
    fast, slow = redray.put(1), sleep_then.remote(20, 2)
    ready, rest = redray.wait([slow, fast], num_returns=2, timeout=0.5)
    assert ready == [fast] and rest == [slow]


def test_wait_with_timeout_zero_does_not_block(cluster):
    slow = sleep_then.remote(20, 2)
    assert redray.wait([slow], timeout=0) == ([], [slow])


# -- cancel -----------------------------------------------------------------------------


def test_cancelled_pending_task_never_runs(cluster, tmp_path):
    blockers = [sleep_then.remote(3, i) for i in range(2)]  # hold both CPUs
    marker = tmp_path / "ran"
    ref = touch.remote(str(marker))
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref)
    redray.get(blockers)
    time.sleep(0.5)
    assert not marker.exists()


def test_dependant_of_a_cancelled_task_fails_with_task_cancelled(cluster):
    blockers = [sleep_then.remote(2, i) for i in range(2)]
    ref = sleep_then.remote(0, 1)
    dependant = add.remote(ref, 1)
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(dependant, timeout=30)
    redray.get(blockers)


# -- context, init, cluster state -------------------------------------------------------


def test_runtime_context_inside_a_task(cluster):
    task_id, job_id, node_id, resources = redray.get(context.remote())
    assert task_id
    assert job_id == redray.get_runtime_context().get_job_id()
    assert node_id == cluster.node_id
    assert resources == {"CPU": 1.0}
    assert redray.get(context.options(num_cpus=0.5).remote())[3] == {"CPU": 0.5}


def test_init_twice_is_an_error_unless_ignored(cluster, settings):
    with pytest.raises(RuntimeError):
        redray.init(address=settings.to_url())
    redray.init(address=settings.to_url(), ignore_reinit_error=True)
    assert redray.is_initialized()


def test_init_with_num_cpus_and_an_address_is_a_value_error(settings):
    with pytest.raises(ValueError):
        redray.init(address=settings.to_url(), num_cpus=1)


def test_unreachable_address_is_a_connection_error_naming_it():
    from redray.server import free_port

    port = free_port()
    with pytest.raises(ConnectionError, match=str(port)):
        redray.init(address=f"redis://127.0.0.1:{port}")
    assert not redray.is_initialized()


def test_cluster_state_has_ray_shapes(cluster):
    assert redray.cluster_resources()["CPU"] == 2
    assert redray.available_resources()["CPU"] == 2
    (node,) = redray.nodes()
    assert node["NodeID"] == cluster.node_id and node["Alive"]
    assert node["Resources"]["CPU"] == 2


def test_is_initialized_follows_init_and_shutdown(settings, node_factory):
    node_factory(num_cpus=1)
    assert not redray.is_initialized()
    redray.init(address=settings.to_url())
    assert redray.is_initialized()
    redray.shutdown()
    assert not redray.is_initialized()
    _ = os
