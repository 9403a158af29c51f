"""The ``redray`` command line: option parsing in-process (CliRunner), and real
``start``/``stop``/``worker`` processes where the behaviour needs them.

Every test that touches the address file or the state file runs with ``TMPDIR``
(for subprocesses) and ``tempfile.tempdir`` (in-process) pointing at its own
temporary directory, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from click.testing import CliRunner
from conftest import gone, run_cli, server_args, start_node, wait_gone

import redray
from redray import api, recovery
from redray.cli import main, processes
from redray.cli.main import cli
from redray.constants import Keys
from redray.server import free_port
from redray.settings import Settings


@redray.remote
def double(x: int) -> int:
    return 2 * x


@pytest.fixture
def fake_agent(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Replace NodeAgent in the CLI: ``worker`` records its NodeConfig and returns."""
    configs: list[Any] = []

    class FakeAgent:
        def __init__(self, config: Any) -> None:
            self.config = config
            self.node_id = config.node_id or "fake-node"
            self.totals = {"CPU": 10_000}

        def run(self) -> None:
            configs.append(self.config)

    monkeypatch.setattr(main, "NodeAgent", FakeAgent)
    return configs


# -- worker: option parsing ------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        "{bad json",
        "[1, 2]",
        '"foo"',
        '{"foo": -1}',
        '{"foo": "two"}',
        '{"foo": true}',
        '{"foo": NaN}',
        '{"CPU": 2}',
        '{"a,b": 1}',
    ],
)
def test_worker_rejects_bad_resources(value: str, fake_agent: list[Any]) -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--address", "redis://127.0.0.1:1/0", "--resources", value]
    )
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--resources'" in result.output
    assert not fake_agent


def test_worker_bad_resources_in_a_real_process() -> None:
    result = run_cli("worker", "--address", "redis://127.0.0.1:1/0", "--resources", "{oops")
    assert result.returncode == 2
    assert "--resources" in result.stderr
    assert "not valid JSON" in result.stderr


def test_worker_bad_resources_from_envvar(fake_agent: list[Any]) -> None:
    result = CliRunner().invoke(
        cli,
        ["worker"],
        env={"REDRAY_ADDRESS": "redis://127.0.0.1:1/0", "REDRAY_RESOURCES": '{"foo": -2}'},
    )
    assert result.exit_code == 2
    assert "'--resources'" in result.output
    assert ">= 0" in result.output


def test_worker_builds_node_config_from_envvars(fake_agent: list[Any]) -> None:
    env = {
        "REDRAY_ADDRESS": "redis://10.1.2.3:7000/2",
        "REDRAY_NUM_CPUS": "3",
        "REDRAY_NUM_GPUS": "0",
        "REDRAY_RESOURCES": '{"foo": 1.5}',
        "REDRAY_NODE_ID": "node-from-env",
        "REDRAY_MIN_EXECUTORS": "2",
        "REDRAY_MAX_EXECUTORS": "5",
        "REDRAY_NODE_TIMEOUT": "45",
    }
    result = CliRunner().invoke(cli, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    [config] = fake_agent
    assert config.address == "redis://10.1.2.3:7000/2"
    assert (config.num_cpus, config.num_gpus) == (3, 0)
    assert config.resources == {"foo": 1.5}
    assert config.node_id == "node-from-env"
    assert (config.min_executors, config.max_executors) == (2, 5)
    assert config.node_timeout == 45


def test_worker_node_timeout_defaults_to_the_recovery_timeout(fake_agent: list[Any]) -> None:
    result = CliRunner().invoke(cli, ["worker", "--address", "redis://127.0.0.1:7001"])
    assert result.exit_code == 0, result.output
    assert fake_agent[0].node_timeout == recovery.NODE_TIMEOUT


def test_worker_options_override_envvars(fake_agent: list[Any]) -> None:
    result = CliRunner().invoke(
        cli,
        ["worker", "--address", "redis://127.0.0.1:7001", "--num-cpus", "1"],
        env={"REDRAY_ADDRESS": "redis://10.1.2.3:7000", "REDRAY_NUM_CPUS": "8"},
    )
    assert result.exit_code == 0, result.output
    [config] = fake_agent
    assert config.address == "redis://127.0.0.1:7001/0"
    assert config.num_cpus == 1
    assert config.resources == {}
    assert config.node_id is None


def test_worker_address_auto_reads_the_address_file(
    redray_tmp: Path, fake_agent: list[Any]
) -> None:
    redray_tmp.mkdir(parents=True, exist_ok=True)
    api.address_file().write_text("redis://127.0.0.1:7005/0\n")
    result = CliRunner().invoke(cli, ["worker", "--address", "auto"])
    assert result.exit_code == 0, result.output
    assert fake_agent[0].address == "redis://127.0.0.1:7005/0"


def test_worker_address_auto_without_a_cluster_fails(
    redray_tmp: Path, fake_agent: list[Any]
) -> None:
    result = CliRunner().invoke(cli, ["worker", "--address", "auto"])
    assert result.exit_code == 1
    assert "redray start --head" in result.output
    assert not fake_agent


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--num-gpus", "1.5"], "'--num-gpus'"),
        (["--num-cpus", "-1"], "'--num-cpus'"),
        (["--node-timeout", "1"], "'--node-timeout'"),
        (["--min-executors", "4", "--max-executors", "2"], "--min-executors (4)"),
        (["--address", "http://x:1"], "'--address'"),
    ],
)
def test_worker_rejects_bad_options(args: list[str], message: str, fake_agent: list[Any]) -> None:
    result = CliRunner().invoke(cli, ["worker", "--address", "redis://127.0.0.1:1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not fake_agent


# -- worker: a real node -------------------------------------------------------------------
def test_worker_node_via_cli_shows_up_with_its_resources(settings: Settings) -> None:
    node = start_node(settings, via_cli=True, num_cpus=1, resources={"foo": 2})
    try:
        proc = psutil.Process(node.process.pid)
        assert proc.cmdline()[1:4] == ["-m", "redray.cli.main", "worker"]
        redray.init(address=settings.to_url())
        [info] = redray.nodes()
        assert info["NodeID"] == node.node_id
        assert info["Pid"] == node.process.pid
        assert info["Resources"]["CPU"] == 1
        assert info["Resources"]["foo"] == 2
        assert redray.cluster_resources()["foo"] == 2
        assert redray.get(double.remote(4)) == 8
        redray.shutdown()

        result = CliRunner().invoke(cli, ["status", "--address", settings.to_url()])
        assert result.exit_code == 0, result.output
        assert node.node_id in result.output
        assert "foo: 2" in result.output
        assert "0/1 CPU" in result.output
        assert "0/2 foo" in result.output
    finally:
        node.stop()
    assert node.process.returncode == 0
    # on SIGTERM the node removed its registration
    client = settings.client()
    try:
        assert client.hlen(Keys(settings.prefix).nodes) == 0
    finally:
        client.close()


# -- start / stop ----------------------------------------------------------------------------
def test_start_head_init_auto_and_stop(redray_tmp: Path) -> None:
    port = free_port()
    address = f"redis://127.0.0.1:{port}/0"
    board = str(free_port())
    result = run_cli(
        "start", "--head", "--port", str(port), "--num-cpus", "1",
        "--dashboard-port", board, *server_args(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert address in result.stdout
    assert f"Dashboard: http://127.0.0.1:{board}/" in result.stdout
    assert 'redray.init(address="auto")' in result.stdout
    assert "redray worker --address=auto" in result.stdout
    assert 'REDRAY_ADDRESS="$(cat ' in result.stdout

    # the address file holds the address with the generated password
    saved = Settings.from_url(api.address_file().read_text().strip())
    assert saved.display == address and saved.password
    assert saved.password not in result.stdout + result.stderr
    entries = processes.read_state()
    assert sorted(e["kind"] for e in entries) == ["dashboard", "node", "server"]
    procs = [psutil.Process(e["pid"]) for e in entries]
    for entry, proc in zip(entries, procs):
        assert abs(proc.create_time() - entry["create_time"]) < 0.1
        # detached: they outlived `start`, in sessions of their own
        assert not gone(proc)
        assert os.getsid(proc.pid) != os.getsid(0)
    [node] = [e for e in entries if e["kind"] == "node"]
    executors = psutil.Process(node["pid"]).children(recursive=True)
    assert executors
    logs = Path(node["log"]).parent
    assert logs.parent.parent == redray_tmp
    assert (logs / "redis-server.log").exists()

    context = redray.init(address="auto")
    assert context.dashboard_url == context["webui_url"] == f"127.0.0.1:{board}"
    # the dashboard reads every panel as the head's least-privileged ACL user
    from redray.dashboard.endpoints import ENDPOINTS

    for path in ENDPOINTS:
        with urllib.request.urlopen(f"http://{context.dashboard_url}{path}", timeout=30) as reply:
            assert reply.status == 200, path
    assert redray.get(double.remote(21)) == 42
    assert [n["NodeID"] for n in redray.nodes()] == [node["node_id"]]
    assert redray.cluster_resources()["CPU"] == 1
    redray.shutdown()

    status = CliRunner().invoke(cli, ["status"])
    assert status.exit_code == 0, status.output
    assert f"Cluster status: {address}" in status.output
    assert node["node_id"] in status.output

    second = CliRunner().invoke(cli, ["start", "--head", "--port", str(free_port())])
    assert second.exit_code == 1
    assert "already running" in second.output
    assert len(processes.read_state()) == 3

    stopped = CliRunner().invoke(cli, ["stop"])
    assert stopped.exit_code == 0, stopped.output
    assert f"Stopped node agent (pid {node['pid']}" in stopped.output
    assert "Stopped Redis server" in stopped.output
    assert "Stopped dashboard" in stopped.output
    assert wait_gone(procs + executors, 1) == []
    assert not api.address_file().exists()
    assert not api.dashboard_file().exists()
    assert not processes.state_file().exists()

    again = CliRunner().invoke(cli, ["stop"])
    assert again.exit_code == 0
    assert "No redray processes" in again.output


def test_head_takes_its_password_from_a_file_and_no_process_shows_it(
    redray_tmp: Path, tmp_path: Path
) -> None:
    secret = "head-" + os.urandom(12).hex()
    pw_file = tmp_path / "pw"
    pw_file.write_text(secret + "\n")
    port = free_port()
    result = run_cli(
        "start", "--head", "--port", str(port), "--num-cpus", "1",
        "--password-file", str(pw_file), "--dashboard-port", str(free_port()), *server_args(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        assert secret not in result.stdout + result.stderr
        for path in (api.address_file(), processes.state_file()):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        saved = Settings.from_url(api.address_file().read_text().strip())
        assert saved.password == secret and saved.username == "redray"
        # the cluster's user is limited to its keys and redray's commands
        limited = saved.client()
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.flushall()
        limited.close()
        anonymous = redis.Redis(host="127.0.0.1", port=port, protocol=2)
        with pytest.raises(redis.AuthenticationError):
            anonymous.set("planted", "x")
        anonymous.close()
        redray.init(address="auto")
        assert redray.get(double.remote(4)) == 8
        redray.shutdown()
        status = CliRunner().invoke(cli, ["status"])
        assert status.exit_code == 0, status.output
        assert secret not in status.output
        procs = [psutil.Process(e["pid"]) for e in processes.read_state()]
        lines = [" ".join(p.cmdline()) for p in procs]
        lines += [" ".join(c.cmdline()) for p in procs for c in p.children(recursive=True)]
        assert len(lines) >= 4  # the server, the node, an executor and the dashboard
        assert not any(secret in line for line in lines)
    finally:
        stopped = CliRunner().invoke(cli, ["stop"])
    assert stopped.exit_code == 0, stopped.output
    assert not api.address_file().exists()


def test_head_refuses_two_passwords(redray_tmp: Path, tmp_path: Path) -> None:
    pw_file = tmp_path / "pw"
    pw_file.write_text("one\n")
    result = CliRunner().invoke(
        cli, ["start", "--head", "--password", "two", "--password-file", str(pw_file)]
    )
    assert result.exit_code == 2
    assert "not both" in result.output


def test_a_password_is_refused_when_only_joining(redray_tmp: Path) -> None:
    result = CliRunner().invoke(cli, ["start", "--address", "auto", "--password", "x"])
    assert result.exit_code == 2
    assert "--password only apply with --head" in result.output


@pytest.mark.parametrize("force", [False, True], ids=["sigterm", "force"])
def test_start_address_joins_an_existing_cluster(
    settings: Settings, redray_tmp: Path, force: bool
) -> None:
    result = run_cli(
        "start", "--address", settings.to_url(), "--num-cpus", "1", "--resources", '{"bar": 3}'
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [entry] = processes.read_state()
    assert entry["kind"] == "node"
    proc = psutil.Process(entry["pid"])
    executors = proc.children(recursive=True)
    # `redray.init(address="auto")` on this machine finds the cluster it joined
    assert api.address_file().read_text().strip() == settings.to_url()

    redray.init(address="auto")
    [info] = redray.nodes()
    assert info["NodeID"] == entry["node_id"]
    assert info["Resources"]["bar"] == 3
    assert redray.get(double.remote(5)) == 10
    redray.shutdown()

    stopped = CliRunner().invoke(cli, ["stop", *(["--force"] if force else [])])
    assert stopped.exit_code == 0, stopped.output
    assert "Stopped node agent" in stopped.output
    assert wait_gone([proc, *executors], 1) == []
    assert not api.address_file().exists()
    assert not processes.state_file().exists()
    if not force:  # a node stopped with SIGTERM deregisters itself
        client = settings.client()
        try:
            assert client.hlen(Keys(settings.prefix).nodes) == 0
        finally:
            client.close()


def test_start_head_on_a_taken_port_fails_and_leaves_nothing(
    settings: Settings, redray_tmp: Path
) -> None:
    result = CliRunner().invoke(
        cli, ["start", "--head", "--port", str(settings.port), *server_args()]
    )
    assert result.exit_code == 1, result.output
    assert "Could not start the Redis server" in result.output
    assert processes.read_state() == []
    assert not api.address_file().exists()


def test_start_address_unreachable_fails(redray_tmp: Path) -> None:
    result = CliRunner().invoke(cli, ["start", "--address", f"redis://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "Could not reach" in result.output
    assert processes.read_state() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Pass --head"),
        (["--head", "--address", "redis://127.0.0.1:1"], "Pass --head"),
        (["--address", "redis://127.0.0.1:1", "--port", "7000"], "--port only apply"),
        (["--head", "--resources", "{"], "'--resources'"),
    ],
)
def test_start_usage_errors(args: list[str], message: str, redray_tmp: Path) -> None:
    result = CliRunner().invoke(cli, ["start", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert processes.read_state() == []


def test_stop_with_nothing_running(redray_tmp: Path) -> None:
    result = CliRunner().invoke(cli, ["stop"])
    assert result.exit_code == 0, result.output
    assert "No redray processes started by `redray start` are running." in result.output


def test_stop_never_signals_a_reused_pid(redray_tmp: Path) -> None:
    """A recorded pid whose creation time differs is another process: left alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        created = psutil.Process(bystander.pid).create_time()
        redray_tmp.mkdir(parents=True, exist_ok=True)
        processes.state_file().write_text(
            json.dumps(
                [
                    {"pid": bystander.pid, "kind": "node", "create_time": created - 1000},
                    {"pid": bystander.pid, "kind": "server", "create_time": created + 1000},
                ]
            )
        )
        api.address_file().write_text("redis://127.0.0.1:1/0\n")
        result = CliRunner().invoke(cli, ["stop", "--force"])
        assert result.exit_code == 0, result.output
        assert "Not running any more" in result.output
        assert "No redray processes" in result.output
        time.sleep(0.2)
        assert bystander.poll() is None
        assert not processes.state_file().exists()
        assert not api.address_file().exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_status_without_a_cluster_fails(redray_tmp: Path) -> None:
    result = CliRunner().invoke(cli, ["status"])
    assert result.exit_code == 1
    assert "redray start --head" in result.output


def test_version_and_help() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert redray.__version__ in result.output
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("worker", "start", "stop", "status"):
        assert command in result.output
    assert "launch-server" not in result.output


def test_acl_prints_a_least_privilege_user_for_a_prefix() -> None:
    result = CliRunner().invoke(cli, ["acl", "--prefix", "team1", "--user", "u1"])
    assert result.exit_code == 0, result.output
    line = result.output.strip()
    assert line.startswith("ACL SETUSER u1 reset on ><password> ~{team1}:* &{team1}:* -@all ")
    assert "+evalsha" in line and "+flushall" not in line
