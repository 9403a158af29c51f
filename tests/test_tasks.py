"""Remote functions, their options, arguments, nesting, cancel, runtime context,
init and cluster state: Ray's semantics, against a real server and real workers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

import redray
from redray.exceptions import TaskCancelledError

# -- remote functions (module level: executors import this module by name) ------------


@redray.remote
def add(x, y):
    return x + y


@redray.remote
def echo(x):
    return x


@redray.remote
def kinds(a, b=2, *, c=3):
    return (a, b, c)


@redray.remote
def type_name(x):
    return type(x).__name__


@redray.remote
def pair():
    return "first", "second"


@redray.remote(num_returns=3)
def triple():
    return 1, 2, 3


@redray.remote
def touch(path):
    Path(path).write_text("ran")


@redray.remote
def touch_after(path, _dependency):
    Path(path).write_text("ran")


@redray.remote(num_returns=0)
def touch_no_returns(path):
    Path(path).write_text("ran")


@redray.remote
def put_inside():
    return [redray.put("put by a task")]


@redray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@redray.remote
def describe_nested(items):
    ref = items[0]
    return type(ref).__name__, redray.get(ref)


@redray.remote
def child():
    return 21


@redray.remote
def parent():
    return redray.get(child.remote()) * 2


@redray.remote(num_cpus=2)
def parent_holding_all_cpus():
    return redray.get(child.remote())


@redray.remote
def free_cpus():
    return redray.available_resources().get("CPU", 0)


@redray.remote(num_cpus=2)
def parent_of_free_cpus():
    return redray.get(free_cpus.remote())


@redray.remote
def returns_ref_in_list():
    return [child.remote()]


@redray.remote
def returns_ref():
    return child.remote()


@redray.remote
def returns_late_ref_in_list(seconds):
    return [sleep_then.remote(seconds, "late")]


@redray.remote
def get_first(items):
    return redray.get(items[0], timeout=30)


@redray.remote
def wait_first(items, timeout):
    ready, _ = redray.wait([items[0]], timeout=timeout)
    return len(ready)


@redray.remote
def raises_value_error():
    raise ValueError("child failed")


@redray.remote
def parent_of_failing_child():
    return redray.get(raises_value_error.remote())


@redray.remote(num_cpus=2)
def waits_on_child_holding_all_cpus():
    ready, _ = redray.wait([child.remote()], timeout=30)
    return redray.get(ready)


@redray.remote(num_cpus=2)
def grandparent_holding_all_cpus():
    return redray.get(parent_holding_all_cpus.remote()) + 1


@redray.remote(num_cpus=2)
def hold_until(path, limit=30.0):
    """Holds both CPUs of the 2-CPU node until ``path`` exists."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@redray.remote(num_cpus=2)
def touch_with_all_cpus(path):
    Path(path).write_text("ran")
    return "ran"


@redray.remote(num_cpus=2)
def barrier():
    return "barrier"


@redray.remote
def task_id_inside():
    return redray.get_runtime_context().get_task_id()


@redray.remote
def job_id_inside():
    return redray.get_runtime_context().get_job_id()


@redray.remote
def node_id_inside():
    return redray.get_runtime_context().get_node_id()


@redray.remote
def assigned_resources():
    return redray.get_runtime_context().get_assigned_resources()


def plain(x):
    return x


def _wait_for(predicate, timeout=20.0):
    """Poll ``predicate`` until it holds; False if it never did within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# -- .remote() and direct calls -------------------------------------------------------


def test_remote_returns_object_ref(cluster):
    ref = add.remote(1, 2)
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref) == 3


def test_calling_remote_function_directly_raises_type_error_mentioning_remote(cluster):
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        add(1, 2)


def test_keyword_arguments_are_passed(cluster):
    assert redray.get(kinds.remote(1, c=30)) == (1, 2, 30)
    assert redray.get(kinds.remote(a=5, b=6, c=7)) == (5, 6, 7)


def test_wrong_arity_at_remote_is_type_error(cluster):
    with pytest.raises(TypeError):
        add.remote(1)
    with pytest.raises(TypeError):
        add.remote(1, 2, 3)
    with pytest.raises(TypeError):
        kinds.remote(1, d=4)


# -- options --------------------------------------------------------------------------


def test_options_num_cpus_is_the_tasks_assigned_cpu(cluster):
    assert redray.get(assigned_resources.options(num_cpus=2).remote()) == {"CPU": 2.0}


def test_options_num_returns_splits_the_result(cluster):
    refs = pair.options(num_returns=2).remote()
    assert isinstance(refs, list) and len(refs) == 2
    assert redray.get(refs) == ["first", "second"]


def test_options_leave_the_remote_function_unchanged(cluster):
    pair.options(num_returns=2).remote()
    ref = pair.remote()
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref) == ("first", "second")


def test_unknown_decorator_option_is_value_error():
    with pytest.raises(ValueError, match="foo"):
        redray.remote(foo=1)(plain)


def test_unknown_options_keyword_is_value_error():
    with pytest.raises(ValueError, match="foo"):
        echo.options(foo=1)


def test_negative_num_cpus_is_value_error():
    with pytest.raises(ValueError):
        redray.remote(num_cpus=-1)(plain)
    with pytest.raises(ValueError):
        echo.options(num_cpus=-0.5)


def test_negative_custom_resource_is_value_error():
    with pytest.raises(ValueError):
        redray.remote(resources={"widget": -1})(plain)
    with pytest.raises(ValueError):
        echo.options(resources={"widget": -2})


def test_cpu_in_resources_is_value_error():
    with pytest.raises(ValueError):
        redray.remote(resources={"CPU": 1})(plain)
    with pytest.raises(ValueError):
        echo.options(resources={"CPU": 1})


# -- num_returns ----------------------------------------------------------------------


def test_num_returns_zero_returns_none_and_still_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    assert touch.options(num_returns=0).remote(str(marker)) is None
    assert _wait_for(marker.exists), "the num_returns=0 task never ran"
    assert marker.read_text() == "ran"


def test_num_returns_one_returns_a_single_ref(cluster):
    ref = triple.options(num_returns=1).remote()
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref) == (1, 2, 3)


def test_num_returns_zero_in_the_decorator_returns_none_and_still_runs(cluster, tmp_path):
    marker = tmp_path / "ran"
    assert touch_no_returns.remote(str(marker)) is None
    assert _wait_for(marker.exists), "the num_returns=0 task never ran"


def test_num_returns_n_returns_a_list_of_refs_each_gettable(cluster):
    refs = triple.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert all(isinstance(r, redray.ObjectRef) for r in refs)
    assert [redray.get(r) for r in refs] == [1, 2, 3]


# -- results and arguments -------------------------------------------------------------


def test_get_keeps_the_requested_order_when_tasks_finish_out_of_order(cluster):
    delays = [0.6, 0.3, 0.1, 0.0]
    refs = [sleep_then.remote(d, i) for i, d in enumerate(delays)]
    assert redray.get(refs) == [0, 1, 2, 3]
    assert redray.get(list(reversed(refs))) == [3, 2, 1, 0]


def test_top_level_ref_argument_is_resolved_to_its_value(cluster):
    ref = redray.put(41)
    assert redray.get(type_name.remote(ref)) == "int"
    assert redray.get(add.remote(ref, 1)) == 42


def test_ref_keyword_argument_is_resolved_to_its_value(cluster):
    assert redray.get(kinds.remote(redray.put("a"), b=redray.put("b"))) == ("a", "b", 3)


def test_task_result_ref_argument_is_resolved_to_its_value(cluster):
    assert redray.get(add.remote(add.remote(1, 2), 10)) == 13


def test_ref_nested_in_a_list_is_passed_as_an_object_ref(cluster):
    ref = redray.put("inside")
    assert redray.get(describe_nested.remote([ref])) == ("ObjectRef", "inside")


def test_task_result_ref_nested_in_a_list_is_passed_as_an_object_ref(cluster):
    ref = echo.remote("from a task")
    assert redray.get(describe_nested.remote([ref])) == ("ObjectRef", "from a task")


def test_same_ref_passed_twice_resolves_both_times(cluster):
    ref = redray.put(5)
    assert redray.get(add.remote(ref, ref)) == 10


# -- nested tasks ---------------------------------------------------------------------


def test_task_can_submit_and_get_a_nested_task(cluster):
    assert redray.get(parent.remote(), timeout=30) == 42


def test_task_holding_all_cpus_can_get_a_child_task(cluster):
    assert redray.get(parent_holding_all_cpus.remote(), timeout=30) == 21


def test_blocked_get_releases_the_callers_cpus(cluster):
    # the parent's 2 CPUs are given back while it blocks; the child holds 1 of them
    assert redray.get(parent_of_free_cpus.remote(), timeout=30) == 1.0


def test_ref_returned_inside_a_task_result_resolves(cluster):
    inner = redray.get(returns_ref_in_list.remote(), timeout=30)
    assert isinstance(inner, list) and len(inner) == 1
    assert isinstance(inner[0], redray.ObjectRef)
    assert redray.get(inner[0], timeout=30) == 21


def test_task_returning_an_object_ref_gives_the_ref_itself(cluster):
    inner = redray.get(returns_ref.remote(), timeout=30)
    assert isinstance(inner, redray.ObjectRef)
    assert redray.get(inner, timeout=30) == 21


def test_ref_in_a_task_result_can_be_got_before_its_task_finishes(cluster):
    (inner,) = redray.get(returns_late_ref_in_list.remote(0.5), timeout=30)
    assert redray.get(inner, timeout=30) == "late"


def test_ref_in_a_task_result_outlives_the_task_that_made_it(cluster):
    (inner,) = redray.get(returns_ref_in_list.remote(), timeout=30)
    # the executor that owned the ref moves on to other tasks
    assert redray.get([echo.remote(i) for i in range(6)]) == list(range(6))
    assert redray.get(inner, timeout=30) == 21


def test_ref_put_inside_a_task_and_returned_resolves(cluster):
    (inner,) = redray.get(put_inside.remote(), timeout=30)
    assert redray.get([echo.remote(i) for i in range(4)]) == list(range(4))
    assert redray.get(inner, timeout=30) == "put by a task"


def test_all_cpus_are_free_again_after_a_blocked_get_returns(cluster):
    assert redray.get(parent_holding_all_cpus.remote(), timeout=30) == 21
    assert redray.available_resources().get("CPU", 0) == 2.0


def test_task_can_get_a_nested_ref_that_is_not_ready_yet(cluster):
    slow = sleep_then.remote(0.5, "arrived")
    assert redray.get(get_first.remote([slow]), timeout=30) == "arrived"


def test_task_wait_on_a_nested_ref_times_out_while_it_is_pending(cluster, tmp_path):
    gate = tmp_path / "gate"
    blocker = hold_until.remote(str(gate))
    try:
        assert redray.get(wait_first.options(num_cpus=0).remote([blocker], 0.3), timeout=30) == 0
    finally:
        gate.touch()


def test_task_wait_on_a_nested_ref_sees_it_ready(cluster):
    assert redray.get(wait_first.remote([redray.put(1)], 10), timeout=30) == 1


def test_error_in_a_nested_task_reaches_the_driver_as_the_original_type(cluster):
    with pytest.raises(ValueError, match="child failed"):
        redray.get(parent_of_failing_child.remote(), timeout=30)


def test_task_holding_all_cpus_can_wait_on_a_child(cluster):
    assert redray.get(waits_on_child_holding_all_cpus.remote(), timeout=30) == [21]


def test_three_levels_of_tasks_holding_all_cpus_complete(cluster):
    assert redray.get(grandparent_holding_all_cpus.remote(), timeout=30) == 22


def test_zero_cpu_task_runs_while_all_cpus_are_held(cluster, tmp_path):
    gate = tmp_path / "gate"
    blocker = hold_until.remote(str(gate))
    try:
        assert redray.get(echo.options(num_cpus=0).remote("free"), timeout=30) == "free"
    finally:
        gate.touch()
    assert redray.get(blocker, timeout=30) == "released"


# -- cancel ---------------------------------------------------------------------------


def test_cancelled_pending_task_raises_task_cancelled_error(cluster, tmp_path):
    gate = tmp_path / "gate"
    blocker = hold_until.remote(str(gate))
    pending = touch_with_all_cpus.remote(str(tmp_path / "ran"))
    redray.cancel(pending)
    with pytest.raises(TaskCancelledError):
        redray.get(pending, timeout=20)
    gate.touch()
    assert redray.get(blocker, timeout=30) == "released"


def test_cancelled_pending_task_never_runs(cluster, tmp_path):
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    blocker = hold_until.remote(str(gate))
    pending = touch_with_all_cpus.remote(str(marker))
    redray.cancel(pending)
    gate.touch()
    assert redray.get(blocker, timeout=30) == "released"
    # same shape, submitted after: FIFO would have run the cancelled task first
    assert redray.get(barrier.remote(), timeout=30) == "barrier"
    assert not marker.exists()


def test_dependant_of_a_cancelled_task_fails_with_task_cancelled_error(cluster, tmp_path):
    gate = tmp_path / "gate"
    blocker = hold_until.remote(str(gate))
    pending = touch_with_all_cpus.remote(str(tmp_path / "ran"))
    dependant = echo.remote(pending)
    redray.cancel(pending)
    gate.touch()
    with pytest.raises(TaskCancelledError):
        redray.get(dependant, timeout=30)
    assert redray.get(blocker, timeout=30) == "released"


def test_cancelled_task_waiting_on_a_dependency_never_runs(cluster, tmp_path):
    gate = tmp_path / "gate"
    marker = tmp_path / "ran"
    blocker = hold_until.remote(str(gate))
    dependant = touch_after.remote(str(marker), blocker)
    redray.cancel(dependant)
    gate.touch()
    with pytest.raises(TaskCancelledError):
        redray.get(dependant, timeout=30)
    assert redray.get(blocker, timeout=30) == "released"
    assert redray.get(barrier.remote(), timeout=30) == "barrier"
    assert not marker.exists()


def test_cancel_of_a_finished_task_does_nothing(cluster):
    ref = echo.remote("done")
    assert redray.get(ref) == "done"
    assert redray.cancel(ref) is None
    assert redray.get(ref) == "done"
    assert redray.get(echo.remote(ref)) == "done"


# -- runtime context ------------------------------------------------------------------


def test_task_id_inside_a_task_identifies_that_task(cluster):
    first, second = redray.get([task_id_inside.remote(), task_id_inside.remote()])
    assert isinstance(first, str) and first
    assert isinstance(second, str) and second
    assert first != second


def test_job_id_inside_a_task_is_the_drivers_job_id(cluster):
    driver_job = redray.get_runtime_context().get_job_id()
    assert driver_job
    assert redray.get(job_id_inside.remote()) == driver_job


def test_node_id_inside_a_task_is_the_nodes_id(cluster):
    assert redray.get(node_id_inside.remote()) == cluster.node_id


def test_assigned_resources_default_to_one_cpu(cluster):
    assert redray.get(assigned_resources.remote()) == {"CPU": 1.0}


def test_assigned_resources_honour_fractional_num_cpus(cluster):
    assert redray.get(assigned_resources.options(num_cpus=0.5).remote()) == {"CPU": 0.5}


# -- init / shutdown ------------------------------------------------------------------


def test_init_twice_raises_runtime_error(cluster, settings):
    with pytest.raises(RuntimeError):
        redray.init(address=settings.to_url())


def test_init_twice_with_ignore_reinit_error_keeps_the_connection(cluster, settings):
    job = redray.get_runtime_context().get_job_id()
    redray.init(address=settings.to_url(), ignore_reinit_error=True)
    assert redray.is_initialized()
    assert redray.get_runtime_context().get_job_id() == job
    assert redray.get(add.remote(1, 1)) == 2


def test_is_initialized_follows_init_and_shutdown(settings):
    assert not redray.is_initialized()
    redray.init(address=settings.to_url())
    assert redray.is_initialized()
    redray.shutdown()
    assert not redray.is_initialized()


def test_init_with_an_unreachable_address_raises_connection_error_naming_it():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    address = f"redis://127.0.0.1:{port}"
    with pytest.raises(ConnectionError) as info:
        redray.init(address=address)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert not redray.is_initialized()


def test_init_with_num_cpus_and_an_address_is_value_error(settings):
    with pytest.raises(ValueError):
        redray.init(address=settings.to_url(), num_cpus=2)
    assert not redray.is_initialized()


# -- cluster state --------------------------------------------------------------------


def test_cluster_resources_report_the_nodes_cpus(cluster):
    resources = redray.cluster_resources()
    assert resources["CPU"] == 2.0
    assert all(isinstance(v, float) for v in resources.values())


def test_cluster_resources_sum_over_nodes(node_factory, connect):
    node_factory(num_cpus=1, resources={"widget": 2})
    node_factory(num_cpus=2, resources={"widget": 1.5})
    connect()
    resources = redray.cluster_resources()
    assert resources["CPU"] == 3.0
    assert resources["widget"] == 3.5


def test_available_resources_of_an_idle_cluster_are_its_totals(cluster):
    assert redray.available_resources()["CPU"] == 2.0


def test_available_resources_exclude_a_running_tasks_cpus(cluster):
    assert redray.get(free_cpus.remote()) == 1.0


def test_nodes_lists_each_node_with_rays_fields(cluster):
    nodes = redray.nodes()
    assert isinstance(nodes, list) and len(nodes) == 1
    node = nodes[0]
    assert node["NodeID"] == cluster.node_id
    assert node["Alive"] is True
    assert node["Resources"]["CPU"] == 2.0
    for key in ("NodeManagerAddress", "NodeManagerHostname", "NodeName"):
        assert isinstance(node[key], str)
