"""The private cluster ``init()`` starts when it has no cluster to join: a
Redis server with a random password, one node agent (or, in local mode, no
node, and a guard process in its place), and the dashboard when asked for.

The node agent watches the driver and stops the server if the driver dies
without ``shutdown()``; in local mode ``redray/server_guard.py`` does that.
``teardown`` stops everything in order: the dashboard first (its driver
leaves cleanly), then the node, then the server.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from . import ids, server_guard
from .constants import DASHBOARD_HOST, DASHBOARD_PORT
from .node_launch import NodeStartError, spawn_node, wait_node_ready
from .server import ServerProcess, launch_server, start_server, wait_ready
from .settings import Settings


class LocalCluster:
    """What one ``init()`` started on this machine; empty when it joined a cluster."""

    def __init__(self) -> None:
        self.server: ServerProcess | None = None
        self.node_process: subprocess.Popen[bytes] | None = None
        self.node_id: str | None = None
        #: local mode's watcher of the server (redray/server_guard.py)
        self.server_guard: subprocess.Popen[bytes] | None = None
        #: the dashboard init(include_dashboard=True) started, and its host:port
        self.dashboard: subprocess.Popen[bytes] | None = None
        self.dashboard_url = ""

    @property
    def directory(self) -> str:
        """The private server's directory (its files, the node's log); "" if none."""
        return self.server.directory if self.server is not None else ""

    # -- starting ------------------------------------------------------------------------
    def start_server_only(self, binary: str | None, secret: str | None) -> Settings:
        """Local mode's private cluster: the Redis server, no node."""
        password = secrets.token_hex(24)
        server = start_server(binary=_binary(binary), password=password)
        self.server = server
        self.node_id = ids.random_id(14)
        # no node agent watches this driver: the guard stops the server if it dies
        self.server_guard = server_guard.spawn(os.getpid(), server.pid, server.directory)
        return Settings(host=server.host, port=server.port, password=password, secret=secret)

    def start(
        self,
        num_cpus: float | None,
        num_gpus: float | None,
        resources: dict[str, float] | None,
        binary: str | None,
        secret: str | None,
    ) -> Settings:
        """A server, up, and one node agent with these resources, starting:
        ``wait_node`` waits for it (the driver connects meanwhile)."""
        binary = _binary(binary)
        # The node process imports while the server starts: both take ~100 ms.
        # A private server still listens on a port every local user can reach:
        # without the password nobody else can run code through it.
        password = secrets.token_hex(24)
        server = launch_server(binary=binary, password=password)
        self.server = server
        settings = Settings(host=server.host, port=server.port, password=password, secret=secret)
        node_id = ids.random_id(14)
        config = {
            "address": settings.to_url(),
            "num_cpus": num_cpus,
            "num_gpus": num_gpus,
            "resources": resources or {},
            "node_id": node_id,
            # the node stops itself and this server if the driver dies without shutdown()
            "owner_pid": os.getpid(),
            "server_pid": server.pid,
            "server_dir": server.directory,
            "secret": secret,
        }
        env = dict(os.environ)
        # Executors import the driver's modules by name, as Ray's local workers do.
        paths = [p for p in sys.path if p] + [os.getcwd()]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        self._spawn_node(config, env)
        try:
            wait_ready(server)
        except RuntimeError:
            # most likely the port was taken between choosing and binding it
            self.teardown()
            server = start_server(binary=binary, password=password)
            self.server = server
            settings = Settings(
                host=server.host, port=server.port, password=password, secret=secret
            )
            self._spawn_node(
                {
                    **config,
                    "address": settings.to_url(),
                    "server_pid": server.pid,
                    "server_dir": server.directory,
                },
                env,
            )
        return settings

    def start_dashboard(self, settings: Settings, host: str, port: int) -> None:
        """Start the private cluster's dashboard; a warning if it does not come
        up (the cluster works without it). It stops with this driver."""
        from .dashboard import launch

        directory = Path(self.directory or tempfile.gettempdir())
        try:
            proc, url = launch.spawn(
                settings, host, port, directory / "dashboard.log", owner_pid=os.getpid()
            )
        except (launch.DashboardStartError, OSError) as exc:
            warnings.warn(str(exc), UserWarning, stacklevel=3)
            return
        self.dashboard, self.dashboard_url = proc, launch.host_port(url)

    def _spawn_node(self, config: dict[str, Any], env: dict[str, str]) -> None:
        # the node's own output (and all its tasks print) goes to its log file in
        # the server's directory: tasks' lines reach this terminal through the
        # job's log stream, prefixed, as on any cluster
        log_path = Path(config["server_dir"]) / "node.log"
        with open(log_path, "ab") as log_file:
            self.node_process = spawn_node(
                config, env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        self.node_id = config["node_id"]

    def wait_node(self, settings: Settings, timeout: float) -> None:
        """Wait until the node ``start`` launched (on ``settings``) is up."""
        assert self.node_id is not None
        try:
            wait_node_ready(settings, self.node_id, self.node_process, timeout)
        except NodeStartError as exc:
            if exc.exit_code is not None:
                raise RuntimeError(
                    f"The local worker node exited with code {exc.exit_code}."
                ) from None
            raise RuntimeError(f"The local worker node did not start within {timeout} s.") from None

    # -- stopping ------------------------------------------------------------------------
    def teardown(self) -> None:
        """Stop what was started (nothing if it joined a cluster)."""
        dashboard, self.dashboard, self.dashboard_url = self.dashboard, None, ""
        if dashboard is not None:
            from .dashboard import launch

            launch.stop(dashboard)  # before the server: its driver leaves cleanly
        node, self.node_process = self.node_process, None
        if node is not None and node.poll() is None:
            node.terminate()
            try:
                node.wait(15)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait(5)
        self.node_id = None
        server, self.server = self.server, None
        if server is not None:
            server.stop()
        guard, self.server_guard = self.server_guard, None
        if guard is not None:
            guard.terminate()  # the server it watched is stopped
            guard.wait(5)


def local_totals(
    num_cpus: float | None, num_gpus: float | None, resources: dict[str, float] | None
) -> dict[str, float]:
    """The one node local mode shows (Ray 2.40's showed the driver's resources)."""
    totals = {"CPU": float(num_cpus if num_cpus is not None else os.cpu_count() or 1)}
    if num_gpus:
        totals["GPU"] = float(num_gpus)
    totals.update({k: float(v) for k, v in (resources or {}).items()})
    return totals


def dashboard_options(kwargs: dict[str, Any]) -> tuple[str, int] | None:
    """Ray's ``include_dashboard``, ``dashboard_host`` and ``dashboard_port``,
    taken out of ``kwargs``: (host, port) of the dashboard to start with a
    private cluster, or None. Ray's default (None) starts none here: a
    dashboard is a process more, and 8265 may be taken; a cluster one joins
    has its own (``redray start --head``)."""
    include = kwargs.pop("include_dashboard", None)
    host = kwargs.pop("dashboard_host", None)
    port = kwargs.pop("dashboard_port", None)
    if not include:
        return None
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
        raise TypeError(f"dashboard_port must be an int, got {port!r}.")
    return (str(host or DASHBOARD_HOST), DASHBOARD_PORT if port is None else int(port))


def _binary(binary: str | None) -> str | None:
    return binary or os.environ.get("REDRAY_REDIS_SERVER") or None
