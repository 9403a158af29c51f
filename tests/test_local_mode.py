"""``init(local_mode=True)``: tasks and actors run in the driver, at ``.remote()``.

Ray 2.60 refuses ``local_mode=True`` (RuntimeError: "`local_mode` is no
longer supported"); the expected values below were measured on Ray 2.40,
the last release with local mode, unless a comment says redray differs
(where Ray 2.40 crashed or hung).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import redray
from redray.exceptions import ActorDiedError, RayTaskError


@pytest.fixture
def local() -> Iterator[None]:
    redray.init(local_mode=True, num_cpus=2)
    try:
        yield
    finally:
        redray.shutdown()


def _driver(code: str, tmp_path: Path) -> str:
    """What a local-mode driver running ``code`` printed; it must exit 0."""
    script = tmp_path / "driver.py"
    body = textwrap.dedent(code)
    script.write_text(
        f"import os, redray\nfrom redray import api\nredray.init(local_mode=True)\n"
        f"{body}\nredray.shutdown()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("REDRAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@redray.remote
def _pid() -> int:
    return os.getpid()


@redray.remote
def _add(a: int, b: int) -> int:
    return a + b


@redray.remote
def _type_name(x: Any) -> str:
    return type(x).__name__


@redray.remote
def _fail() -> None:
    raise ValueError("bad")


@redray.remote
def _append(items: list[int]) -> list[int]:
    items.append(1)
    return items


@redray.remote
def _count(n: int) -> Any:
    yield from range(n)


@redray.remote
class _Counter:
    """Counts its calls to inc(), from ``start``."""

    def __init__(self, start: int = 0) -> None:
        self.value = start

    def inc(self) -> int:
        self.value = self.value + 1
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def fail(self) -> None:
        raise KeyError("k")


@redray.remote
class _BadInit:
    def __init__(self) -> None:
        raise RuntimeError("init")

    def ping(self) -> int:
        return 1


@redray.remote
def _inc_through(handle: Any) -> int:
    return int(redray.get(handle.inc.remote()))


@redray.remote
def _nested() -> int:
    return int(redray.get(_add.remote(1, 2)))


# -- in the driver's process (subprocesses) -----------------------------------------------


def test_task_runs_in_the_drivers_pid_and_starts_no_node(tmp_path: Path) -> None:
    # Ray 2.40: the task's os.getpid() is the driver's
    out = _driver(
        """
        @redray.remote
        def pid():
            return os.getpid()
        print(redray.get(pid.remote()) == os.getpid(), api._global.local.node_process is None)
        """,
        tmp_path,
    )
    assert out.split() == ["True", "True"]


def test_print_in_a_task_appears_in_the_drivers_stdout_at_remote(tmp_path: Path) -> None:
    # Ray 2.40: the task has run (and printed) when .remote() returns
    out = _driver(
        """
        @redray.remote
        def hello():
            print("from the task", flush=True)
        hello.remote()
        print("after remote", flush=True)
        """,
        tmp_path,
    )
    assert out.splitlines() == ["from the task", "after remote"]


def test_shutdown_leaves_no_process_behind(tmp_path: Path) -> None:
    out = _driver(
        """
        import atexit, psutil
        print(api._global.local.server.pid)
        # after the shutdown that follows: what this driver still has running
        atexit.register(lambda: print(len(psutil.Process().children(recursive=True))))
        """,
        tmp_path,
    )
    pid, children = (int(x) for x in out.split()[:2])
    assert not Path(f"/proc/{pid}").exists()
    assert children == 0


def test_shutdown_deletes_what_the_job_left_in_a_joined_cluster(
    settings: Any, redis_client: Any
) -> None:
    # as Ray 2.40: local mode with an address joins that cluster
    before = set(redis_client.keys("*"))
    redray.init(address=settings.to_url(), local_mode=True)
    assert redray.get(_add.remote(1, 2)) == 3
    ref = redray.put(5)
    counter = _Counter.options(name="joined").remote()
    assert redray.get(counter.inc.remote()) == 1
    del ref
    redray.shutdown()
    left = set(redis_client.keys("*")) - before
    assert all(key.endswith(b"jobcounter") for key in left), left


# -- tasks ---------------------------------------------------------------------------------


def test_task_result_is_an_object_ref(local: None) -> None:
    ref = _add.remote(1, 2)
    assert isinstance(ref, redray.ObjectRef)
    assert redray.get(ref) == 3


def test_tasks_run_in_submission_order_at_remote(local: None, tmp_path: Path) -> None:
    # Ray 2.40: after three .remote() calls the log holds 0, 1, 2
    log = tmp_path / "order.txt"

    @redray.remote
    def note(i: int) -> None:
        with log.open("a") as f:
            f.write(f"{i}\n")

    for i in range(3):
        note.remote(i)
    assert log.read_text().split() == ["0", "1", "2"]


def test_task_error_is_raised_by_get_as_the_users_class(local: None) -> None:
    # Ray 2.40: .remote() returns; get raises RayTaskError(ValueError)
    ref = _fail.remote()
    with pytest.raises(ValueError) as info:
        redray.get(ref)
    assert isinstance(info.value, RayTaskError)


def test_failed_task_is_not_retried(local: None, tmp_path: Path) -> None:
    # Ray 2.40: max_retries=2, retry_exceptions=True still runs the task once
    log = tmp_path / "runs.txt"

    @redray.remote(max_retries=2, retry_exceptions=True)
    def flaky() -> None:
        with log.open("a") as f:
            f.write("x\n")
        raise ValueError("x")

    with pytest.raises(ValueError):
        redray.get(flaky.remote())
    assert log.read_text().split() == ["x"]


def test_object_ref_argument_is_resolved_to_its_value(local: None) -> None:
    # Ray 2.40: "int" for a top-level ref, "list" for a ref inside a list
    ref = redray.put(5)
    assert redray.get(_type_name.remote(ref)) == "int"
    assert redray.get(_type_name.remote([ref])) == "list"


def test_task_gets_a_copy_of_its_arguments(local: None) -> None:
    # Ray 2.40: neither the argument nor a put value is changed by the task
    items = [0]
    redray.get(_append.remote(items))
    ref = redray.put([0])
    redray.get(_append.remote(ref))
    assert items == [0] and redray.get(ref) == [0]


def test_failed_argument_fails_the_task_with_its_error(local: None) -> None:
    with pytest.raises(ValueError):
        redray.get(_type_name.remote(_fail.remote()))


def test_nested_task_runs(local: None) -> None:
    assert redray.get(_nested.remote()) == 3


def test_num_returns_gives_one_ref_per_value(local: None) -> None:
    @redray.remote(num_returns=2)
    def two() -> tuple[int, int]:
        return 1, 2

    first, second = two.remote()
    assert redray.get([first, second]) == [1, 2]


def test_generator_with_num_returns_gives_its_first_values(local: None) -> None:
    # Ray 2.40: [0, 1, 2]
    assert redray.get(_count.options(num_returns=3).remote(5)) == [0, 1, 2]


def test_streaming_generator_yields_refs_in_order(local: None) -> None:
    # Ray 2.40's local mode crashed here; redray gives what normal mode gives
    assert [redray.get(r) for r in _count.remote(3)] == [0, 1, 2]


def test_dynamic_generator_gives_its_values(local: None) -> None:
    refs = redray.get(_count.options(num_returns="dynamic").remote(3))
    assert [redray.get(r) for r in refs] == [0, 1, 2]


def test_wait_finds_local_results_ready(local: None) -> None:
    # Ray 2.40: 1 ready, 1 not returned
    ready, rest = redray.wait([_add.remote(1, 1), _add.remote(2, 2)], num_returns=1)
    assert len(ready) == 1 and len(rest) == 1


def test_get_with_zero_timeout_returns_the_value(local: None) -> None:
    assert redray.get(_add.remote(1, 1), timeout=0) == 2


def test_cancel_of_a_finished_task_does_nothing(local: None) -> None:
    ref = _add.remote(2, 3)
    redray.cancel(ref)
    assert redray.get(ref) == 5


# -- actors --------------------------------------------------------------------------------


def test_actor_keeps_its_state_in_the_drivers_process(local: None) -> None:
    # Ray 2.40: [1, 2, 3], and the actor's pid is the driver's
    counter = _Counter.remote()
    assert redray.get([counter.inc.remote() for _ in range(3)]) == [1, 2, 3]
    assert redray.get(counter.pid.remote()) == os.getpid()


def test_actor_method_error_is_raised_by_get_as_the_users_class(local: None) -> None:
    counter = _Counter.remote()
    with pytest.raises(KeyError) as info:
        redray.get(counter.fail.remote())
    assert isinstance(info.value, RayTaskError)


def test_actor_handle_passed_to_a_task_reaches_the_same_actor(local: None) -> None:
    # Ray 2.40: 4 after three calls from the driver
    counter = _Counter.remote()
    for _ in range(3):
        counter.inc.remote()
    assert redray.get(_inc_through.remote(counter)) == 4


def test_named_actor_is_found_by_get_actor(local: None) -> None:
    # Ray 2.40: 11, and the handles are equal
    handle = _Counter.options(name="counter").remote(10)
    found = redray.get_actor("counter")
    assert redray.get(found.inc.remote()) == 11
    assert found == handle


def test_second_actor_with_a_taken_name_is_a_value_error(local: None) -> None:
    # Ray 2.40: ValueError
    _Counter.options(name="taken").remote()
    with pytest.raises(ValueError):
        _Counter.options(name="taken").remote()


def test_kill_frees_the_actors_name(local: None) -> None:
    # Ray 2.40: get_actor raises ValueError after kill
    handle = _Counter.options(name="doomed").remote()
    redray.kill(handle)
    with pytest.raises(ValueError):
        redray.get_actor("doomed")


def test_call_after_kill_raises_actor_died(local: None) -> None:
    # redray differs: Ray 2.40's local mode ignored kill and the call still ran
    handle = _Counter.remote()
    redray.kill(handle)
    with pytest.raises(ActorDiedError):
        redray.get(handle.inc.remote())


def test_call_to_an_actor_whose_init_raised_raises_actor_died(local: None) -> None:
    # redray differs: Ray 2.40's local mode never answered the call
    handle = _BadInit.remote()
    with pytest.raises(ActorDiedError):
        redray.get(handle.ping.remote())


# -- the cluster as local mode shows it --------------------------------------------------------


def test_nodes_shows_one_alive_node_with_the_drivers_cpus(local: None) -> None:
    # Ray 2.40: one node, Alive, CPU 2.0 for init(num_cpus=2)
    (node,) = redray.nodes()
    assert node["Alive"] and node["Resources"]["CPU"] == 2.0


def test_cluster_and_available_resources_are_the_drivers(local: None) -> None:
    # Ray 2.40: CPU 2.0 in both
    assert redray.cluster_resources()["CPU"] == 2.0
    assert redray.available_resources()["CPU"] == 2.0


def test_runtime_context_in_a_task_is_the_drivers(local: None) -> None:
    # Ray 2.40: the task sees the driver's job and worker ids, and no task id
    @redray.remote
    def ids() -> tuple[Any, str, str]:
        ctx = redray.get_runtime_context()
        return ctx.get_task_id(), ctx.get_worker_id(), ctx.get_job_id()

    ctx = redray.get_runtime_context()
    assert redray.get(ids.remote()) == (None, ctx.get_worker_id(), ctx.get_job_id())
    assert ctx.get_node_id() == redray.nodes()[0]["NodeID"]
