"""``redray list``, ``redray summary`` and ``redray get``, run as real processes
against a real cluster."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, run_python, wait_for

import redray
from redray.util import state


@redray.remote
def double(x: int) -> int:
    return 2 * x


@redray.remote
def explode() -> None:
    raise RuntimeError("cli boom")


@redray.remote
class Box:
    def ping(self) -> str:
        return "pong"


def _finished(n: int) -> None:
    wait_for(
        lambda: len(state.list_tasks(filters=[("state", "!=", "RUNNING")])) >= n,
        what=f"{n} tasks ended",
    )


def _ok(*args: str) -> str:
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_list_tasks_prints_a_table_with_rays_columns(settings, cluster):
    redray.get([double.remote(i) for i in range(2)])
    _finished(2)
    out = _ok("list", "tasks", "--address", settings.to_url())
    header, *rows = out.strip().splitlines()
    assert header.split()[:4] == ["TASK_ID", "ATTEMPT_NUMBER", "NAME", "STATE"]
    assert len(rows) == 2 and all("FINISHED" in r and "double" in r for r in rows)
    assert "START_TIME_MS" not in header  # a --detail column


def test_list_tasks_json_with_a_filter_and_detail(settings, cluster):
    redray.get(double.remote(1))
    with pytest.raises(RuntimeError):
        redray.get(explode.remote())
    _finished(2)
    out = _ok(
        "list", "tasks", "--filter", "state=FAILED", "--detail", "--format", "json",
        "--address", settings.to_url(),
    )  # fmt: skip
    (task,) = json.loads(out)
    assert task["func_or_class_name"] == "explode"
    assert task["error_type"] == "TASK_EXECUTION_EXCEPTION"
    assert task["start_time_ms"] <= task["end_time_ms"]


def test_list_limit_caps_the_rows(settings, cluster):
    redray.get([double.remote(i) for i in range(3)])
    _finished(3)
    out = _ok("list", "tasks", "--limit", "1", "--format", "json", "--address", settings.to_url())
    assert len(json.loads(out)) == 1


def test_list_takes_the_address_from_redray_address(settings, cluster, monkeypatch):
    monkeypatch.setenv("REDRAY_ADDRESS", settings.to_url())
    out = _ok("list", "nodes", "--format", "json")
    (node,) = json.loads(out)
    assert node["node_id"] == cluster.node_id and node["state"] == "ALIVE"


def test_list_jobs_leaves_out_the_commands_own_job(settings, cluster):
    from redray import session

    (job,) = json.loads(_ok("list", "jobs", "--format", "json", "--address", settings.to_url()))
    assert job["job_id"] == session.current_runtime().job_id


def test_list_actors_table(settings, cluster):
    box = Box.remote()
    redray.get(box.ping.remote())
    out = _ok("list", "actors", "--address", settings.to_url())
    assert box._actor_id in out and "ALIVE" in out


def test_a_bad_filter_is_refused(settings, cluster):
    done = run_cli("list", "tasks", "--filter", "nonsense=1", "--address", settings.to_url())
    assert done.returncode != 0
    assert "not supported" in done.stderr
    done = run_cli("list", "tasks", "--filter", "novalue", "--address", settings.to_url())
    assert done.returncode != 0 and "key=value" in done.stderr


def test_summary_tasks_counts_per_function(settings, cluster):
    redray.get([double.remote(i) for i in range(3)])
    _finished(3)
    out = _ok("summary", "tasks", "--format", "json", "--address", settings.to_url())
    got = json.loads(out)["cluster"]
    assert got["summary"]["double"]["state_counts"] == {"FINISHED": 3}
    assert got["total_tasks"] == 3
    table = _ok("summary", "tasks", "--address", settings.to_url())
    assert "FUNC_OR_CLASS_NAME" in table and "double" in table


def test_summary_actors_and_objects(settings, cluster):
    box = Box.remote()
    redray.get(box.ping.remote())
    ref = redray.put(b"y" * 1000)
    actors = json.loads(
        _ok("summary", "actors", "--format", "json", "--address", settings.to_url())
    )
    assert actors["cluster"]["total_actors"] == 1
    objects = json.loads(
        _ok("summary", "objects", "--format", "json", "--address", settings.to_url())
    )
    assert objects["cluster"]["total_objects"] >= 1
    del ref


def test_get_task_prints_one_task(settings, cluster):
    ref = double.remote(21)
    assert redray.get(ref) == 42
    _finished(1)
    task_id = ref.hex()[:20]
    got = json.loads(_ok("get", "task", task_id, "--address", settings.to_url()))
    assert got["task_id"] == task_id and got["state"] == "FINISHED"


def test_get_an_unknown_actor_fails(settings, cluster):
    done = run_cli("get", "actor", "f" * 32, "--address", settings.to_url())
    assert done.returncode != 0 and "No actor" in done.stderr


def test_list_nodes_as_yaml_is_yaml_of_the_nodes(settings, cluster):
    import yaml

    nodes = yaml.safe_load(_ok("list", "nodes", "--format", "yaml", "--address", settings.to_url()))
    assert [n["node_id"] for n in nodes] == [cluster.node_id]


def test_yaml_without_pyyaml_is_refused_clearly(settings, cluster):
    # PyYAML is a test dependency: the CLI runs here as if it were not installed
    code = "import sys; sys.modules['yaml'] = None; from redray.cli.main import cli; cli()"
    url = settings.to_url()
    done = run_python("-c", code, "list", "nodes", "--format", "yaml", "--address", url)
    assert done.returncode != 0 and "PyYAML" in done.stderr, done.stderr


def test_timeline_writes_a_chrome_trace_of_the_tasks_that_ended(settings, cluster, tmp_path):
    redray.get([double.remote(i) for i in range(3)])
    _finished(3)
    trace = tmp_path / "trace.json"
    _ok("timeline", "--output", str(trace), "--address", settings.to_url())
    events = json.loads(trace.read_text())
    doubles = [e for e in events if e["name"] == "task::double"]
    assert len(doubles) == 3
    assert all(e["ph"] == "X" and e["dur"] >= 0 and e["ts"] > 0 for e in doubles)
    assert {e["pid"] for e in doubles} == {f"Node {cluster.node_id}"}


def test_timeline_with_a_filename_writes_what_it_returns_without_one(settings, cluster, tmp_path):
    redray.get(double.remote(1))
    _finished(1)
    path = tmp_path / "t.json"
    assert redray.timeline(str(path)) is None
    assert json.loads(path.read_text()) == redray.timeline()


def test_memory_shows_objects_by_owner_and_size(settings, cluster):
    kept = redray.put(b"x" * 300_000)
    shown = _ok("memory", "--address", settings.to_url())
    job_id = redray.get_runtime_context().get_job_id()
    assert job_id in shown and kept.hex() in shown
    assert "0.29 MiB" in shown
