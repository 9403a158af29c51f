"""Multi-node scheduling, GPUs, executor crashes and cleanup, with real processes."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import warnings

import psutil
import pytest
from conftest import kept_logs, wait_for

import redray
import redray.local_cluster
from redray import infeasible
from redray.constants import Keys


@redray.remote
def where() -> str:
    return redray.get_runtime_context().get_node_id()


@redray.remote
def gpu_env() -> tuple[str, list, str]:
    ctx = redray.get_runtime_context()
    return os.environ.get("CUDA_VISIBLE_DEVICES", ""), redray.get_gpu_ids(), ctx.get_node_id()


@redray.remote
def hold_gpu(seconds: float) -> str:
    time.sleep(seconds)
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@redray.remote
def crash_once(marker: str) -> str:
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return "survived"


@redray.remote
def crash_always() -> None:
    os._exit(3)


@redray.remote
def echo(x):
    return x


def test_tasks_run_on_the_node_that_has_their_custom_resource(settings, node_factory, connect):
    alpha = node_factory(num_cpus=1, resources={"alpha": 1}, via_cli=True)
    beta = node_factory(num_cpus=1, resources={"beta": 1}, via_cli=True)
    connect()
    on_alpha = [where.options(resources={"alpha": 1}).remote() for _ in range(4)]
    on_beta = [where.options(resources={"beta": 0.5}).remote() for _ in range(4)]
    assert set(redray.get(on_alpha)) == {alpha.node_id}
    assert set(redray.get(on_beta)) == {beta.node_id}


def test_cluster_resources_sum_every_node(settings, node_factory, connect):
    node_factory(num_cpus=1, resources={"alpha": 1})
    node_factory(num_cpus=2, resources={"alpha": 2, "beta": 1})
    connect()
    total = redray.cluster_resources()
    assert total["CPU"] == 3
    assert total["alpha"] == 3
    assert total["beta"] == 1
    assert len(redray.nodes()) == 2


def test_infeasible_task_warns_and_waits_for_a_node_that_fits(settings, node_factory, connect):
    node_factory(num_cpus=1)
    connect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ref = where.options(resources={"gamma": 1}).remote()
    assert any("gamma" in str(w.message) for w in caught)
    ready, _ = redray.wait([ref], timeout=0.5)
    assert ready == []
    late = node_factory(num_cpus=1, resources={"gamma": 1})
    assert redray.get(ref, timeout=30) == late.node_id


def _repeats(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "still cannot be scheduled" in r.getMessage()]


@pytest.fixture
def infeasible_task(settings, node_factory, connect, monkeypatch, caplog):
    """A task asking for 'gamma', which no node has, with re-checks every 0.2 s."""
    monkeypatch.setattr(infeasible, "REPEAT_S", 0.2)
    caplog.set_level(logging.WARNING, logger="redray.infeasible")
    node_factory(num_cpus=1)
    connect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return where.options(resources={"gamma": 1}).remote()


def test_infeasible_task_warning_repeats_while_it_waits(infeasible_task, caplog):
    wait_for(lambda: len(_repeats(caplog)) >= 2, timeout=20, what="a repeated warning")
    assert "1 task(s)" in _repeats(caplog)[0] and "gamma" in _repeats(caplog)[0]


def test_infeasible_task_warning_stops_once_a_node_fits(infeasible_task, node_factory, caplog):
    wait_for(lambda: _repeats(caplog), timeout=20, what="a repeated warning")
    node_factory(num_cpus=1, resources={"gamma": 1})
    redray.get(infeasible_task, timeout=30)
    time.sleep(0.5)  # a few re-checks
    caplog.clear()
    time.sleep(0.5)
    assert _repeats(caplog) == []


def test_gpu_task_lands_on_the_gpu_node_with_its_device_visible(settings, node_factory, connect):
    node_factory(num_cpus=2)
    gpu_node = node_factory(num_cpus=2, num_gpus=2, env={"CUDA_VISIBLE_DEVICES": "3,5"})
    connect()
    visible, gpu_ids, node_id = redray.get(gpu_env.options(num_gpus=1).remote())
    assert node_id == gpu_node.node_id
    assert visible in ("3", "5")
    assert gpu_ids == [int(visible)]


def test_cpu_task_on_a_gpu_node_sees_no_gpu(settings, node_factory, connect):
    node_factory(num_cpus=1, num_gpus=1, env={"CUDA_VISIBLE_DEVICES": "0"})
    connect()
    visible, gpu_ids, _ = redray.get(gpu_env.remote())
    assert visible == ""
    assert gpu_ids == []


def test_fractional_gpus_pack_onto_one_device(settings, node_factory, connect):
    node_factory(num_cpus=2, num_gpus=2, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    connect()
    refs = [hold_gpu.options(num_gpus=0.5).remote(1.0) for _ in range(2)]
    first, second = redray.get(refs)
    assert first == second


def test_two_whole_gpus_get_two_devices(settings, node_factory, connect):
    node_factory(num_cpus=1, num_gpus=2, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    connect()
    visible, gpu_ids, _ = redray.get(gpu_env.options(num_gpus=2).remote())
    assert sorted(visible.split(",")) == ["0", "1"]
    assert sorted(gpu_ids) == [0, 1]


def test_crashed_executor_task_is_retried(cluster, tmp_path):
    assert redray.get(crash_once.remote(str(tmp_path / "marker"))) == "survived"


def test_crashed_executor_without_retries_raises_worker_crashed(cluster):
    with pytest.raises(redray.exceptions.WorkerCrashedError):
        redray.get(crash_always.options(max_retries=0).remote(), timeout=30)


def test_crashed_executor_is_replaced(cluster):
    with pytest.raises(redray.exceptions.WorkerCrashedError):
        redray.get(crash_always.options(max_retries=0).remote(), timeout=30)
    node = psutil.Process(cluster.process.pid)
    deadline = time.monotonic() + 10
    while len(node.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(node.children()) >= 2
    assert redray.get([echo.remote(i) for i in range(10)]) == list(range(10))


def _run_a_job(settings) -> None:
    redray.init(address=settings.to_url())
    kept = redray.put(b"x" * 200_000)
    refs = [echo.remote(i) for i in range(20)]
    nested = echo.remote([kept])
    assert redray.get(refs) == list(range(20))
    assert redray.get(redray.get(nested)[0]) == b"x" * 200_000
    with pytest.raises(ZeroDivisionError):
        redray.get(_divide.remote(1, 0))
    pending = where.options(resources={"nowhere": 1}).remote()
    assert redray.wait([pending], timeout=0.1)[0] == []
    redray.shutdown()


def test_job_keys_return_to_baseline_after_shutdown(settings, node_factory, redis_client):
    node_factory(num_cpus=2)
    keys = Keys()
    baseline = set(redis_client.keys("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run_a_job(settings)
        after_first = {k.decode() for k in redis_client.keys("*")}
        # only the cluster's own counters, shape registry and task events
        # outlive a job, and its output for a while (it expires)
        left = after_first - {k.decode() for k in baseline}
        assert left - kept_logs(redis_client, left) <= {
            keys.job_counter,
            keys.seq,
            keys.shapes,
            keys.task_events,
        }
        _run_a_job(settings)
    now = {k.decode() for k in redis_client.keys("*")}
    assert now - kept_logs(redis_client, now) == after_first - kept_logs(redis_client, after_first)


@redray.remote
def _divide(a, b):
    return a / b


def test_dropped_ref_deletes_its_payload(cluster, redis_client):
    keys = Keys()
    ref = redray.put(b"y" * 1000)
    key = keys.obj(ref.hex())
    assert redis_client.exists(key)
    del ref
    deadline = time.monotonic() + 5
    while redis_client.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not redis_client.exists(key)


def test_result_of_dropped_ref_is_deleted_when_it_arrives_without_any_get(cluster, redis_client):
    keys = Keys()
    ref = echo.remote(5)
    oid = ref.hex()
    del ref
    # no get: the flusher applies the notice in the background, then frees
    wait_for(lambda: not redis_client.exists(keys.obj(oid)), timeout=10)


def _local_processes() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True)}


def test_embedded_init_and_shutdown_leave_no_process_port_or_temp_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("REDRAY_ADDRESS", raising=False)
    before = _local_processes()
    redray.init(num_cpus=1)
    runtime = redray.api.current_runtime()
    port = runtime.settings.port
    server_dir = redray.api._global.local.server.directory
    started = _local_processes() - before
    assert started, "init started no process"
    assert redray.get(echo.remote(41)) == 41
    redray.shutdown()
    deadline = time.monotonic() + 10
    while (
        any(
            psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            for p in started
        )
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    alive = [
        p
        for p in started
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not os.path.exists(server_dir)


def test_an_embedded_node_that_dies_at_start_fails_init_and_leaves_nothing(monkeypatch):
    monkeypatch.delenv("REDRAY_ADDRESS", raising=False)
    before = _local_processes()

    def dying_node(config, **kwargs):
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], **kwargs)

    monkeypatch.setattr(redray.local_cluster, "spawn_node", dying_node)
    # the driver connects while the node starts; the node's death still fails init
    with pytest.raises(RuntimeError, match="exited with code 3"):
        redray.init(num_cpus=1)
    assert redray.api.session.current_runtime(required=False) is None
    wait_for(
        lambda: (
            not [
                p
                for p in _local_processes() - before
                if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
            ]
        ),
        timeout=10,
        what="the server stopped",
    )
    monkeypatch.undo()
    redray.init(num_cpus=1)  # and the next init starts afresh
    try:
        assert redray.get(echo.remote(7)) == 7
    finally:
        redray.shutdown()
