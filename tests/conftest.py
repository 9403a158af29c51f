"""Fixtures: a real Redis-compatible server per session, on a free loopback port,
and real ``redray`` worker node processes per test.

Set ``REDRAY_TEST_SERVER`` to the server binary to test against (CI runs the
suite once with Debian's ``redis-server`` 7 and once with the default).
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from click.testing import CliRunner

import redray
from redray import api
from redray.cli import processes
from redray.cli.main import cli
from redray.constants import Keys
from redray.node_launch import spawn_node, wait_node_ready
from redray.server import ServerProcess, free_port, launch_server, start_server, wait_ready
from redray.settings import Settings

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(scope="session")
def redis_server() -> Iterator[ServerProcess]:
    server = start_server(binary=os.environ.get("REDRAY_TEST_SERVER") or None)
    yield server
    server.stop()


@pytest.fixture
def settings(redis_server: ServerProcess) -> Settings:
    """Settings for the session server, with every key flushed."""
    s = Settings(host=redis_server.host, port=redis_server.port)
    client = s.client()
    client.flushall()
    client.close()
    return s


@pytest.fixture
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = settings.client()
    yield client
    client.close()


def wait_for(predicate: Any, timeout: float = 20, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached in time"
        time.sleep(0.05)


class Exploit:
    """Unpickling this creates ``path``: the side effect of code run by pickle."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (open, (self.path, "w"))


def malicious_pickle(path: Any) -> bytes:
    """A pickle that, if anything unpickles it, creates the file ``path``:
    attacks write it into Redis and assert the file never appears."""
    return pickle.dumps(Exploit(str(path)))


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Node:
    """A ``redray worker`` node process started by a test."""

    process: subprocess.Popen[bytes]
    node_id: str
    settings: Settings
    extra_env: dict[str, str] = field(default_factory=dict)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
                self.process.wait(5)


def start_node(
    settings: Settings,
    *,
    num_cpus: float | None = 2,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    via_cli: bool = False,
    timeout: float = 30.0,
    config: dict[str, Any] | None = None,
) -> Node:
    """Start a worker node in its own process group and wait until it is up."""
    import uuid

    node_id = uuid.uuid4().hex[:16]
    full_env = worker_env()
    full_env.update(env or {})
    if via_cli:
        cmd = [
            sys.executable,
            "-m",
            "redray.cli.main",
            "worker",
            "--address",
            settings.to_url(),
            "--node-id",
            node_id,
        ]
        if num_cpus is not None:
            cmd += ["--num-cpus", str(num_cpus)]
        if num_gpus is not None:
            cmd += ["--num-gpus", str(num_gpus)]
        if resources:
            cmd += ["--resources", json.dumps(resources)]
    else:
        node_config = {
            "address": settings.to_url(),
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "resources": resources or {},
            "node_id": node_id,
            **(config or {}),
        }
        cmd = []
    if cmd:
        proc = subprocess.Popen(cmd, env=full_env, start_new_session=True, stdin=subprocess.DEVNULL)
    else:
        # as init() and `redray start` do: the configuration on stdin
        proc = spawn_node(node_config, env=full_env)
    node = Node(proc, node_id, settings, env or {})
    try:
        wait_node_ready(settings, node_id, proc, timeout)  # NodeStartError (a RuntimeError)
        cpus = num_cpus if num_cpus is not None else os.cpu_count() or 1
        executors = (config or {}).get("min_executors") or max(1, int(cpus))
        client = settings.client()
        try:
            wait_executors_listed(client, Keys(settings.prefix), node_id, executors, timeout)
        finally:
            client.close()
    except BaseException:
        # not handed to the test, so nobody else would stop it (nor its executors)
        node.kill()
        proc.wait(10)
        raise
    return node


def wait_executors_listed(
    client: redis.Redis, keys: Keys, node_id: str, count: int, timeout: float = 30
) -> None:
    """A node says it is up before it forks its executors; a test that takes
    a baseline of the cluster's keys waits for the executors to be listed too."""
    key = keys.node_workers(node_id)
    wait_for(lambda: len(client.smembers(key)) >= count, timeout, "the node's executors")


@pytest.fixture
def node_factory(settings: Settings) -> Iterator[Any]:
    nodes: list[Node] = []

    def factory(**kwargs: Any) -> Node:
        # settings=: the node (and its executors) reach the server another way
        node = start_node(kwargs.pop("settings", settings), **kwargs)
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()


@pytest.fixture
def cluster(settings: Settings, node_factory: Any) -> Iterator[Node]:
    """One 2-CPU node and a driver connected to it."""
    node = node_factory(num_cpus=2)
    redray.init(address=settings.to_url())
    yield node
    redray.shutdown()


#: the secret of the ``signed`` fixture's cluster
CLUSTER_SECRET = "cluster-secret-for-tests"


@pytest.fixture
def signed(settings: Settings, node_factory: Any) -> Iterator[Node]:
    """A 2-CPU node and a driver of a cluster with a secret: payloads are signed."""
    node = node_factory(num_cpus=2, config={"secret": CLUSTER_SECRET})
    redray.init(address=settings.to_url(), _secret=CLUSTER_SECRET)
    yield node
    redray.shutdown()


@pytest.fixture
def connect(settings: Settings) -> Iterator[Any]:
    """Connect the driver to the session server (after starting nodes yourself)."""

    def do(**kwargs: Any) -> None:
        redray.init(address=settings.to_url(), **kwargs)

    yield do
    redray.shutdown()


@pytest.fixture(autouse=True)
def _no_leaked_driver() -> Iterator[None]:
    yield
    if redray.is_initialized():
        redray.shutdown()


class PersistentServer:
    """A server with the documented persistence settings (AOF, fsync on every
    write), that a test can SIGKILL and start again in place."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port = free_port()
        self.server: ServerProcess | None = None

    def start(self) -> None:
        self.server = launch_server(
            binary=os.environ.get("REDRAY_TEST_SERVER") or None,
            port=self.port,
            directory=self.directory,
            appendonly=True,
            extra_args=["--appendfsync", "always"],
        )
        self.server.owns_directory = False
        wait_ready(self.server)

    def kill(self) -> None:
        assert self.server is not None
        self.server.process.kill()
        self.server.process.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def persistent(tmp_path: Path) -> Iterator[PersistentServer]:
    server = PersistentServer(str(tmp_path / "data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def parallel_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large copies (redray/buffers.py) split among three threads from 1 MiB,
    so that small test values take the threaded path."""
    from redray import buffers

    monkeypatch.setattr(buffers, "PARALLEL", buffers.HUGE)
    monkeypatch.setattr(buffers, "_threads", lambda: 3)


@pytest.fixture
def proxy_factory(redis_server: ServerProcess) -> Iterator[Any]:
    """Fault-injection proxies in front of the session server (tests/faultproxy.py):
    ``make()`` starts one; point a process at it with ``settings_via(proxy)``."""
    from faultproxy import FaultProxy

    proxies: list[Any] = []

    def make() -> Any:
        proxy = FaultProxy(redis_server.host, redis_server.port).start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.stop()


@pytest.fixture(scope="session")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A TLS-only server with a password (tests/tlsserver.py). Skipped where no
    server binary here can do TLS, unless ``REDRAY_REQUIRE_TLS`` is set (CI's
    pass with Debian's redis-server): then that is a failure."""
    import tlsserver

    directory = tmp_path_factory.mktemp("tls")
    certs = tlsserver.make_certificates(directory)
    for binary in tlsserver.candidates():
        server = tlsserver.start(binary, directory, certs)
        if server is not None:
            yield server
            server.stop()
            return
    message = f"no TLS-capable server binary among {tlsserver.candidates()}"
    if os.environ.get("REDRAY_REQUIRE_TLS"):
        pytest.fail(message)
    pytest.skip(message)


def settings_via(settings: Settings, proxy: Any) -> Settings:
    """The same cluster, reached through ``proxy``."""
    return settings.replace(port=proxy.port)


def free_cpus(client: redis.Redis, node_id: str) -> float:
    """A node's free CPUs, read straight from Redis."""
    raw = client.hget(Keys().node_avail(node_id), "CPU")
    return int(raw or 0) / 10_000


def cluster_keys(client: redis.Redis, keys: Keys) -> set[str]:
    return {k.decode() for k in client.scan_iter(match=keys.tag + ":*", count=1000)}


#: keys that outlive every job by design: the job and ready-order counters,
#: the registry of shapes ever submitted, the capped dead-letter and task-event streams
CLUSTER_LIFETIME = {"jobcounter", "seq", "shapes", "deadletters", "task:ended"}


def kept_logs(client: redis.Redis, now: set[str]) -> set[str]:
    """Jobs' log streams that are left on purpose, to be read after the job
    (``redray logs``), and expire: those with a TTL."""
    return {k for k in now if k.endswith(":logs") and client.ttl(k) > 0}


def _executor_keys(client: redis.Redis, keys: Keys) -> set[str]:
    """Keys a live node and its executors keep for their own life: a control
    stream once it was written to, an executor's submission watermark and
    its wake list (a new-shape token it has not read yet)."""
    out = set()
    for raw in client.hkeys(keys.nodes):
        node = raw.decode()
        out.add(keys.node_control(node))
        for w in client.smembers(keys.node_workers(node)):
            out.add(keys.submitted(w.decode()))
            out.add(keys.executor_wake(w.decode()))
    return out


def assert_back_to_baseline(
    client: redis.Redis, keys: Keys, baseline: set[str], gone_nodes: Any = ()
) -> None:
    """After the jobs: the keys before them, less those of nodes that died,
    plus only the cluster-lifetime ones (and live executors' own)."""
    expected = {k for k in baseline if not any(n in k for n in gone_nodes)}
    allowed = {f"{keys.tag}:{name}" for name in CLUSTER_LIFETIME}

    def settled() -> bool:
        now = cluster_keys(client, keys)
        extra = allowed | _executor_keys(client, keys) | kept_logs(client, now)
        return now - extra == expected - extra

    try:
        wait_for(settled, timeout=30, what="keys back to baseline")
    except AssertionError:
        now = cluster_keys(client, keys)
        extra = allowed | _executor_keys(client, keys) | kept_logs(client, now)
        raise AssertionError(
            f"left behind: {sorted(now - expected - extra)}; "
            f"missing: {sorted((expected - extra) - now)}"
        ) from None


# -- the CLI and the local head ---------------------------------------------------------------
def gone(proc: psutil.Process) -> bool:
    """True once ``proc`` exited (a zombie nobody reaps counts as exited)."""
    return processes._gone(proc)


def wait_gone(procs: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """Those of ``procs`` still running after up to ``timeout`` seconds."""
    return processes._wait_gone(procs, timeout)


def run_python(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` in a real process, as a user runs a driver script
    (TMPDIR from os.environ); its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``python -m redray.cli.main ARGS`` in a real process (TMPDIR from os.environ)."""
    return run_python("-m", "redray.cli.main", *args, timeout=timeout)


def server_args() -> list[str]:
    binary = os.environ.get("REDRAY_TEST_SERVER")
    return ["--redis-server", binary] if binary else []


@pytest.fixture
def redray_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private ``<tmp>/redray-sessions`` for the address and state files; stops leftovers."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.delenv("REDRAY_ADDRESS", raising=False)
    assert Path(tempfile.gettempdir()) == tmp
    assert api.address_file().parent == tmp / "redray-sessions"
    yield tmp / "redray-sessions"
    # safety net for a failed test: nothing it started may outlive it
    leftovers = [
        psutil.Process(e["pid"]) for e in processes.read_state() if processes.live_process(e)
    ]
    if leftovers:
        CliRunner().invoke(cli, ["stop", "--force"])
        for proc in wait_gone(leftovers, 5):
            proc.kill()
