"""``redray.util.state``: listings, look-ups and summaries in Ray's names and
shapes, and the task-event stream behind the finished and failed tasks."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import wait_for

import redray
from redray import session
from redray.util import state


@redray.remote
def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.02)
    return path


@redray.remote
def add(a: int, b: int) -> int:
    return a + b


@redray.remote
def fail() -> None:
    raise ValueError("state-api boom")


@redray.remote
class Counter:
    def value(self) -> int:
        return 1

    def broken(self) -> None:
        raise KeyError("actor-call boom")

    def wait_for_file(self, path: str) -> str:
        while not os.path.exists(path):
            time.sleep(0.02)
        return path


def _task(ref: redray.ObjectRef) -> state.TaskState:
    task = state.get_task(ref)
    assert task is not None
    return task


def _state_of(ref: redray.ObjectRef) -> str:
    task = state.get_task(ref)
    return task.state if task is not None else ""


def _events_key() -> str:
    return session.current_runtime().keys.task_events


def test_a_running_task_is_running_with_its_node_and_worker(cluster, tmp_path):
    gate = tmp_path / "go"
    ref = wait_for_file.remote(str(gate))
    wait_for(lambda: _state_of(ref) == "RUNNING", what="the task running")
    task = _task(ref)
    assert task.node_id == cluster.node_id
    assert task.worker_id
    assert task.type == "NORMAL_TASK"
    assert task.func_or_class_name == "wait_for_file"
    assert task.required_resources == {"CPU": 1.0}
    gate.touch()
    redray.get(ref)


def test_a_task_waiting_for_an_input_is_pending_args_avail(cluster, tmp_path):
    gate = tmp_path / "go"
    first = wait_for_file.remote(str(gate))
    waiting = add.remote(first, "!")
    wait_for(lambda: _state_of(waiting) == "PENDING_ARGS_AVAIL", what="the dependant listed")
    assert _task(waiting).node_id is None
    gate.touch()
    redray.get(waiting)


def test_a_queued_task_without_a_free_slot_is_pending_node_assignment(cluster, tmp_path):
    gate = tmp_path / "go"
    busy = [wait_for_file.remote(str(gate)) for _ in range(2)]  # both CPUs
    queued = add.remote(1, 2)
    wait_for(lambda: all(_state_of(r) == "RUNNING" for r in busy), what="both CPUs taken")
    assert _state_of(queued) == "PENDING_NODE_ASSIGNMENT"
    gate.touch()
    assert redray.get(queued) == 3


def test_a_finished_task_is_finished_with_start_and_end_times(cluster):
    ref = add.remote(1, 2)
    assert redray.get(ref) == 3
    wait_for(lambda: _state_of(ref) == "FINISHED", what="the finished task listed")
    task = _task(ref)
    assert task.start_time_ms is not None and task.end_time_ms is not None
    assert task.start_time_ms <= task.end_time_ms
    assert task.node_id == cluster.node_id and task.worker_pid
    assert task.error_type is None


def _failed(ref: redray.ObjectRef, raises: type[Exception]) -> state.TaskState:
    """The listed record of the task behind ``ref``, which raised ``raises``."""
    with pytest.raises(raises):
        redray.get(ref)
    wait_for(lambda: _state_of(ref) == "FAILED", what="the failed task listed")
    task = _task(ref)
    assert task.error_type == "TASK_EXECUTION_EXCEPTION"
    return task


def test_a_failed_task_is_failed_with_its_error_type_and_message(cluster):
    task = _failed(fail.remote(), ValueError)
    assert "state-api boom" in (task.error_message or "")


def test_a_running_task_cancelled_is_failed_with_task_cancelled(cluster, tmp_path):
    ref = wait_for_file.remote(str(tmp_path / "never"))
    wait_for(lambda: _state_of(ref) == "RUNNING", what="the task running")
    redray.cancel(ref)
    wait_for(lambda: _state_of(ref) == "FAILED", what="the cancelled task listed")
    assert _task(ref).error_type == "TASK_CANCELLED"


def test_a_task_with_enable_task_events_false_leaves_no_event(cluster):
    quiet = add.options(enable_task_events=False).remote(1, 1)
    loud = add.remote(2, 2)
    assert redray.get([quiet, loud]) == [2, 4]
    wait_for(lambda: _state_of(loud) == "FINISHED", what="the other task's event")
    assert state.get_task(quiet) is None


@redray.remote
class Quiet:
    @redray.method(enable_task_events=False)
    def hidden(self) -> int:
        return 1

    def shown(self) -> int:
        return 2


def test_an_actor_call_with_enable_task_events_false_leaves_no_event(cluster):
    actor = Counter.remote()
    quiet = actor.value.options(enable_task_events=False).remote()
    loud = actor.value.remote()
    assert redray.get([quiet, loud]) == [1, 1]
    wait_for(lambda: _state_of(loud) == "FINISHED", what="the other call's event")
    assert state.get_task(quiet) is None


def test_a_method_declared_without_task_events_leaves_no_event(cluster):
    actor = Quiet.remote()
    quiet, loud = actor.hidden.remote(), actor.shown.remote()
    assert redray.get([quiet, loud]) == [1, 2]
    wait_for(lambda: _state_of(loud) == "FINISHED", what="the other method's event")
    assert state.get_task(quiet) is None


def test_an_actor_without_task_events_leaves_none_unless_a_call_asks(cluster):
    actor = Counter.options(enable_task_events=False).remote()
    quiet = actor.value.remote()
    loud = actor.value.options(enable_task_events=True).remote()
    assert redray.get([quiet, loud]) == [1, 1]
    wait_for(lambda: _state_of(loud) == "FINISHED", what="the asked-for event")
    assert state.get_task(quiet) is None


def test_enable_task_events_must_be_a_bool(cluster):
    with pytest.raises(ValueError, match="enable_task_events"):
        Counter.remote().value.options(enable_task_events="no")


def test_filters_match_as_ray_does_and_limit_caps_the_listing(cluster):
    redray.get([add.remote(i, i) for i in range(3)])
    with pytest.raises(ValueError):
        redray.get(fail.remote())
    wait_for(lambda: len(state.list_tasks()) >= 4, what="four tasks listed")
    failed = state.list_tasks(filters=[("state", "=", "failed")])  # case-insensitive
    assert [t.func_or_class_name for t in failed] == ["fail"]
    others = state.list_tasks(filters=[("state", "!=", "FAILED")])
    assert {t.func_or_class_name for t in others} == {"add"}
    assert len(state.list_tasks(limit=2)) == 2


def test_a_filter_on_an_unknown_column_is_refused(cluster):
    with pytest.raises(ValueError, match="not supported"):
        state.list_tasks(filters=[("no_such_column", "=", "x")])


def test_state_records_answer_dict_access(cluster):
    ref = add.remote(1, 1)
    redray.get(ref)
    wait_for(lambda: _state_of(ref) == "FINISHED", what="the task listed")
    task = _task(ref)
    assert task["task_id"] == task.task_id and task["state"] == "FINISHED"
    assert dict(task)["job_id"] == task.job_id
    with pytest.raises(KeyError):
        task["no_such_field"]


def test_the_task_event_list_is_capped(settings, node_factory):
    node_factory(num_cpus=2, env={"REDRAY_TASK_EVENTS_MAX": "10"})
    redray.init(address=settings.to_url())
    try:
        redray.get([add.remote(i, 0) for i in range(400)])
        client = session.current_runtime().client
        # trimmed in the batch that adds: never more than the cap
        assert client.llen(_events_key()) == 10
        assert len(state.list_tasks()) == 10
    finally:
        redray.shutdown()


def test_the_task_event_list_of_an_actor_batch_is_capped(settings, node_factory):
    node_factory(num_cpus=2, env={"REDRAY_TASK_EVENTS_MAX": "10"})
    redray.init(address=settings.to_url())
    try:
        counter = Counter.remote()
        redray.get([counter.value.remote() for _ in range(400)])
        client = session.current_runtime().client
        assert client.llen(_events_key()) == 10
    finally:
        redray.shutdown()


def test_a_foreign_task_event_record_is_skipped(cluster):
    redray.get(add.remote(1, 2))
    client = session.current_runtime().client
    wait_for(lambda: client.llen(_events_key()) >= 1, what="the event recorded")
    client.rpush(_events_key(), b"not json", b"[1, 2]", b'{"t": 5}')
    [task] = [t for t in state.list_tasks() if t.func_or_class_name == "add"]
    assert task.state == "FINISHED"


def test_summarize_tasks_counts_per_function_and_state(cluster):
    redray.get([add.remote(i, i) for i in range(3)])
    with pytest.raises(ValueError):
        redray.get(fail.remote())

    def summary() -> dict:
        return state.summarize_tasks()["cluster"]

    wait_for(lambda: summary()["total_tasks"] == 4, what="four tasks summarized")
    got = summary()
    assert got["summary"]["add"] == {
        "func_or_class_name": "add",
        "type": "NORMAL_TASK",
        "state_counts": {"FINISHED": 3},
    }
    assert got["summary"]["fail"]["state_counts"] == {"FAILED": 1}
    assert got["summary_by"] == "func_name"


def test_an_alive_actors_creation_task_is_finished(cluster):
    actor = Counter.remote()
    assert redray.get(actor.value.remote()) == 1
    (creation,) = state.list_tasks(filters=[("type", "=", "ACTOR_CREATION_TASK")])
    assert creation.state == "FINISHED"
    assert creation.actor_id == actor._actor_id
    assert creation.func_or_class_name == "Counter"


def test_a_finished_actor_call_is_an_actor_task_of_its_actor(cluster):
    counter = Counter.remote()
    ref = counter.value.remote()
    assert redray.get(ref) == 1
    wait_for(lambda: _state_of(ref) == "FINISHED", what="the actor call listed")
    task = _task(ref)
    assert task.type == "ACTOR_TASK" and task.actor_id == counter._actor_id
    assert task.func_or_class_name == "Counter.value"
    assert task.start_time_ms is not None and task.start_time_ms <= (task.end_time_ms or 0)


def test_an_actor_call_running_is_running_and_those_behind_it_wait(cluster, tmp_path):
    counter = Counter.remote()
    redray.get(counter.value.remote())
    gate = tmp_path / "go"
    running = counter.wait_for_file.remote(str(gate))
    queued = counter.value.remote()
    wait_for(lambda: _state_of(running) == "RUNNING", what="the call running")
    task = _task(running)
    assert task.type == "ACTOR_TASK" and task.actor_id == counter._actor_id
    assert task.name == "Counter.wait_for_file" and task.node_id == cluster.node_id
    assert _state_of(queued) == "SUBMITTED_TO_WORKER"
    gate.touch()
    assert redray.get([running, queued], timeout=30) == [str(gate), 1]
    wait_for(lambda: _state_of(queued) == "FINISHED", what="the queued call ended")


def test_a_failed_actor_call_is_failed_with_its_error(cluster):
    task = _failed(Counter.remote().broken.remote(), KeyError)
    assert task.type == "ACTOR_TASK" and "actor-call boom" in (task.error_message or "")


def test_get_actor_and_summarize_actors(cluster):
    actor = Counter.remote()
    redray.get(actor.value.remote())
    got = state.get_actor(actor._actor_id)
    assert got is not None and got.state == "ALIVE" and got["node_id"] == cluster.node_id
    assert state.get_actor("f" * 32) is None
    summary = state.summarize_actors()["cluster"]
    assert summary["total_actors"] == 1
    ((_name, entry),) = summary["summary"].items()
    assert entry["state_counts"] == {"ALIVE": 1}


def test_list_objects_shows_a_put_object_with_its_size(cluster):
    ref = redray.put(b"x" * 10_000)
    (obj,) = [o for o in state.list_objects() if o.object_id == ref.hex()]
    assert obj.object_size >= 10_000
    assert state.summarize_objects()["cluster"]["total_objects"] >= 1


def test_list_nodes_jobs_and_workers(cluster):
    redray.get(add.remote(1, 1))
    (node,) = state.list_nodes()
    assert node.node_id == cluster.node_id and node.state == "ALIVE"
    assert node.resources_total["CPU"] == 2.0
    runtime = session.current_runtime()
    (job,) = state.list_jobs()
    assert job.job_id == runtime.job_id and job.status == "RUNNING"
    workers = state.list_workers()
    drivers = [w for w in workers if w.worker_type == "DRIVER"]
    assert [w.worker_id for w in drivers] == [runtime.worker_id]
    assert any(w.worker_type == "WORKER" and w.node_id == cluster.node_id for w in workers)


def test_get_task_of_an_unknown_id_is_none(cluster, tmp_path: Path):
    assert state.get_task("0" * 20) is None
