"""``redray dashboard``: its JSON endpoints against a real cluster and a real
server process, access control, security headers, a Redis outage, shutdown,
TLS and credentials. The page itself is tested in a browser
(test_dashboard_browser.py)."""

from __future__ import annotations

import base64
import os
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import CLUSTER_SECRET, gone, run_cli, start_node, wait_for, wait_gone
from dashboard_util import get, start_dashboard

import redray
from redray.constants import Keys
from redray.settings import Settings

TOKEN = "dashboard-test-token"


@redray.remote
def wait_for_file(path: str) -> str:
    while not os.path.exists(path):
        time.sleep(0.05)
    return "done"


@redray.remote
def quick(x: int) -> int:
    return x + 1


@redray.remote
class Keeper:
    def ping(self) -> str:
        return "pong"


@pytest.fixture
def dashboard(settings: Settings) -> Any:
    started = []

    def make(*args: str, address: str | None = None, **kwargs: Any) -> Any:
        board = start_dashboard(address or settings.to_url(), *args, **kwargs)
        started.append(board)
        return board

    yield make
    for board in started:
        if board.process.poll() is None:
            board.stop(signal.SIGKILL)


def test_endpoints_show_nodes_tasks_actors_jobs_and_objects(
    cluster: Any, dashboard: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    keeper = Keeper.options(name="keeper").remote()
    assert redray.get(keeper.ping.remote()) == "pong"
    assert redray.get(quick.remote(1)) == 2
    held = redray.put(b"x" * 100_000)
    ref = wait_for_file.options(name="waiting-task").remote(str(release))
    board = dashboard()

    def running() -> list[Any]:
        status, data = get(board.url + "api/tasks/running")
        assert status == 200
        return [t for t in data["running"] if t["name"] == "waiting-task"]

    wait_for(running, what="the running task")
    (task,) = running()
    assert task["node_id"] == cluster.node_id and task["function"] == "wait_for_file"
    assert task["state"] == "RUNNING" and task["age_s"] >= 0

    status, nodes = get(board.url + "api/nodes")
    assert status == 200
    (node,) = nodes["nodes"]
    assert node["node_id"] == cluster.node_id and node["alive"] is True
    cpu = next(r for r in node["resources"] if r["name"] == "CPU")
    assert cpu["total"] == 2 and cpu["used"] >= 1  # the actor or the waiting task holds one

    _, tasks = get(board.url + "api/tasks")
    assert tasks["by_state"].get("RUNNING", 0) >= 1
    functions = {f["name"]: f for f in tasks["by_function"]}
    assert functions["quick"]["state_counts"] == {"FINISHED": 1}

    _, actors = get(board.url + "api/actors")
    (actor,) = actors["actors"]
    assert actor["name"] == "keeper" and actor["state"] == "ALIVE"
    assert actor["num_restarts"] == 0 and actor["node_id"] == cluster.node_id

    _, jobs = get(board.url + "api/jobs")
    # the test's driver, not the dashboard's own job
    assert [j["job_id"] for j in jobs["jobs"]] == [redray.get_runtime_context().get_job_id()]

    _, objects = get(board.url + "api/objects")
    assert objects["total"] >= 1 and objects["total_bytes"] >= 100_000
    assert held.hex() in {o["object_id"] for o in objects["largest"]}
    assert objects["by_owner"][0]["job_id"] == jobs["jobs"][0]["job_id"]

    _, queues = get(board.url + "api/queues")
    assert queues == {"demands": []}
    _, letters = get(board.url + "api/dead_letters")
    assert letters == {"dead_letters": []}
    _, info = get(board.url + "api/cluster")
    assert info["address"] == settings_display(cluster) and "@" not in info["address"]

    release.touch()
    assert redray.get(ref) == "done"
    wait_for(lambda: not running(), what="the task no longer running")


def settings_display(node: Any) -> str:
    return str(node.settings.display)


@pytest.mark.filterwarnings("ignore:Task test_dashboard.quick asks for")
def test_queue_depth_per_resource_shape_and_dead_letters(
    cluster: Any, dashboard: Any, redis_client: Any
) -> None:
    ref = quick.options(resources={"nowhere": 1}).remote(1)
    from redray import dead_letters

    dead_letters.record(redis_client, Keys(), "test", "a reason <b>", b"junk", task="t1")
    board = dashboard()

    def demands() -> list[Any]:
        return list(get(board.url + "api/queues")[1]["demands"])

    wait_for(demands, what="the queued demand")
    (demand,) = demands()
    assert demand["resources"] == {"CPU": 1.0, "nowhere": 1.0}
    assert demand["queued"] == 1 and demand["infeasible"] and demand["missing"] == ["nowhere"]
    (letter,) = get(board.url + "api/dead_letters")[1]["dead_letters"]
    assert letter["reason"] == "a reason <b>" and letter["task"] == "t1" and "data" not in letter
    redray.cancel(ref)


def test_the_page_and_its_files_carry_security_headers(settings: Settings, dashboard: Any) -> None:
    import urllib.request

    board = dashboard()
    for path, kind in [("", "text/html"), ("app.js", "text/javascript"), ("style.css", "text/css")]:
        with urllib.request.urlopen(board.url + path, timeout=10) as reply:
            assert reply.headers["Content-Type"].startswith(kind)
            csp = reply.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert get(board.url + "nowhere")[0] == 404
    assert "innerHTML" not in get(board.url + "app.js")[1]


def test_binds_to_loopback_by_default(settings: Settings, dashboard: Any) -> None:
    board = dashboard()
    assert board.url.startswith("http://127.0.0.1:")
    port = int(board.url.rsplit(":", 1)[1].strip("/"))
    listening = [
        c
        for c in psutil.Process(board.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [(c.laddr.ip, c.laddr.port) for c in listening] == [("127.0.0.1", port)]


def test_a_non_loopback_host_without_a_token_is_refused(settings: Settings) -> None:
    done = run_cli("dashboard", "--address", settings.to_url(), "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "without a token" in done.stderr and "REDRAY_DASHBOARD_TOKEN" in done.stderr


def test_with_a_token_every_request_needs_it(settings: Settings, dashboard: Any) -> None:
    board = dashboard("--host", "0.0.0.0", env={"REDRAY_DASHBOARD_TOKEN": TOKEN})
    url = board.url.replace("0.0.0.0", "127.0.0.1")
    for path in ("", "app.js", "api/nodes", "healthz"):
        status, body = get(url + path)
        assert status == 401 and "token" in body["error"]
    basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
    wrong = base64.b64encode(b"anyone:wrong").decode()
    assert get(url + "api/nodes", {"Authorization": f"Basic {basic}"})[0] == 200
    assert get(url + "api/nodes", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert get(url + "api/nodes", {"Authorization": f"Basic {wrong}"})[0] == 401
    assert get(url + "api/nodes", {"Authorization": "Bearer wrong"})[0] == 401
    assert get(url + "api/nodes", {"Authorization": "Basic !!!"})[0] == 401


def test_a_redis_outage_is_reported_and_the_dashboard_recovers(
    persistent: Any, dashboard: Any
) -> None:
    address = Settings(host="127.0.0.1", port=persistent.port).to_url()
    board = dashboard(address=address)
    assert get(board.url + "api/nodes") == (200, {"nodes": []})
    persistent.kill()
    started = time.monotonic()
    status, body = get(board.url + "api/nodes")
    assert status == 503 and "cannot reach the cluster" in body["error"]
    assert time.monotonic() - started < 10
    assert get(board.url)[0] == 200  # the page still loads, and shows the outage
    assert board.process.poll() is None
    persistent.start()
    wait_for(lambda: get(board.url + "api/nodes")[0] == 200, timeout=30, what="recovery")
    assert get(board.url + "api/tasks")[0] == 200


def test_sigterm_and_sigint_stop_it_cleanly(settings: Settings, dashboard: Any) -> None:
    client = settings.client()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            board = dashboard()
            assert get(board.url + "api/jobs")[0] == 200
            assert client.hlen(Keys().jobs) == 1  # its driver's job
            proc = psutil.Process(board.process.pid)
            children = proc.children(recursive=True)
            assert board.stop(sig) == 0
            assert gone(proc) and not wait_gone(children, 5)
            # its driver disconnected: its job record went with it
            wait_for(lambda: client.hlen(Keys().jobs) == 0, what="the job gone")
    finally:
        client.close()


def test_over_tls_with_the_password_from_the_environment(tls_server: Any, dashboard: Any) -> None:
    settings = tls_server.settings
    client = settings.client()
    client.flushall()
    client.close()
    node = start_node(settings, num_cpus=1)
    try:
        no_password = settings.replace(password=None).to_url()
        board = dashboard(address=no_password, env={"REDRAY_PASSWORD": str(settings.password)})
        status, data = get(board.url + "api/nodes")
        assert status == 200 and [n["node_id"] for n in data["nodes"]] == [node.node_id]
        assert get(board.url + "api/cluster")[1]["address"].startswith("rediss://")
    finally:
        node.stop()


def test_a_signed_cluster_needs_its_secret(signed: Any, dashboard: Any, tmp_path: Path) -> None:
    release = tmp_path / "release"
    wait_for_file.options(name="signed-task").remote(str(release))
    secret_file = tmp_path / "secret"
    secret_file.write_text(CLUSTER_SECRET + "\n")
    board = dashboard("--secret-file", str(secret_file))

    def names() -> list[str]:
        return [t["name"] for t in get(board.url + "api/tasks/running")[1]["running"]]

    try:
        wait_for(lambda: names() == ["signed-task"], what="the signed task's name")
    finally:
        release.touch()


def test_start_head_refuses_a_public_dashboard_without_a_token(
    redray_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from redray.cli import processes
    from redray.cli.main import cli

    monkeypatch.delenv("REDRAY_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(cli, ["start", "--head", "--dashboard-host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "REDRAY_DASHBOARD_TOKEN" in result.output and "--include-dashboard" in result.output
    assert processes.read_state() == []  # refused before anything started
    joined = CliRunner().invoke(cli, ["start", "--address", "auto", "--dashboard-port", "1"])
    assert joined.exit_code == 2 and "only apply with --head" in joined.output


def test_init_include_dashboard_starts_one_with_a_private_cluster() -> None:
    from redray import api
    from redray.server import free_port

    port = free_port()
    context = redray.init(num_cpus=1, include_dashboard=True, dashboard_port=port)
    try:
        assert context.dashboard_url == context["webui_url"] == f"127.0.0.1:{port}"
        status, data = get(f"http://127.0.0.1:{port}/api/nodes")
        assert status == 200 and len(data["nodes"]) == 1
        assert api._global.local.dashboard is not None
        proc = psutil.Process(api._global.local.dashboard.pid)
    finally:
        redray.shutdown()
    assert not wait_gone([proc], 10)
    assert redray.init(num_cpus=1).dashboard_url == ""  # Ray's default starts none here
    redray.shutdown()


DIES_WITH_A_DASHBOARD = """
import json, os, signal, redray
from redray import api
from redray.server import free_port
context = redray.init(num_cpus=1, include_dashboard=True, dashboard_port=free_port())
board = api._global.local.dashboard
print(json.dumps({"url": context.dashboard_url, "pid": board.pid}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_dashboard_of_a_killed_driver_stops_too() -> None:
    import json

    from conftest import run_python

    done = run_python("-c", DIES_WITH_A_DASHBOARD)
    assert done.returncode == -signal.SIGKILL, done.stderr
    started = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        proc = psutil.Process(started["pid"])
    except psutil.NoSuchProcess:
        return  # already gone
    assert not wait_gone([proc], 15)


def test_the_compose_files_contract(tmp_path: Path) -> None:
    """As docker/docker-compose.yml runs it: ``dashboard --host 0.0.0.0
    --port P`` with the address (password included), the secret and the
    token all in the environment, none on the command line."""
    from redray.server import free_port, start_server

    password = "compose-" + os.urandom(8).hex()
    server = start_server(binary=os.environ.get("REDRAY_TEST_SERVER") or None, password=password)
    settings = Settings(host=server.host, port=server.port, password=password)
    node = start_node(settings, num_cpus=1, config={"secret": CLUSTER_SECRET})
    release = tmp_path / "release"
    board = None
    try:
        redray.init(address=settings.to_url(), _secret=CLUSTER_SECRET)
        ref = wait_for_file.options(name="compose-task").remote(str(release))
        env = {
            "REDRAY_ADDRESS": f"redis://:{password}@127.0.0.1:{server.port}/0",
            "REDRAY_SECRET": CLUSTER_SECRET,
            "REDRAY_DASHBOARD_TOKEN": TOKEN,
        }
        port = free_port()
        board = start_dashboard(None, "--host", "0.0.0.0", "--port", str(port), env=env)
        cmdline = " ".join(psutil.Process(board.process.pid).cmdline())
        assert password not in cmdline and TOKEN not in cmdline
        url = f"http://127.0.0.1:{port}/"
        assert get(url + "api/tasks/running")[0] == 401
        auth = {"Authorization": "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()}

        def names() -> list[str]:
            return [t["name"] for t in get(url + "api/tasks/running", auth)[1]["running"]]

        wait_for(lambda: names() == ["compose-task"], what="the task by name")
        release.touch()
        assert redray.get(ref) == "done"
    finally:
        release.touch()
        if board is not None:
            board.stop()
        redray.shutdown()
        node.stop()
        server.stop()


def test_start_head_runs_on_when_the_dashboard_port_is_taken(redray_tmp: Path) -> None:
    import socket

    from conftest import server_args

    from redray import api
    from redray.cli import processes
    from redray.server import free_port

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = str(taken.getsockname()[1])
        head = ["start", "--head", "--port", str(free_port()), "--num-cpus", "1"]
        result = run_cli(*head, "--dashboard-port", port, *server_args())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "The cluster runs without a dashboard" in result.stderr
        assert sorted(e["kind"] for e in processes.read_state()) == ["node", "server"]
        assert not api.dashboard_file().exists()
    finally:
        taken.close()
        assert run_cli("stop").returncode == 0
