"""Starting a node agent process (``python -m redray.workers.node``).

The node's configuration holds the cluster's address, which may carry its
password, so it travels on the child's standard input, never on its command
line: ``ps`` shows every process's arguments to every local user, and the
node's executors (forked from it) would show them too.

Every redray process started from Python (a node, the head's server
launcher) runs through ``module_command``: it imports the redray package the
starting process imported, whatever the working directory holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import IO, Any

import redray

from . import connections
from .constants import Keys
from .settings import Settings

#: the node's argument that says "read the configuration from stdin"
CONFIG_FROM_STDIN = "-"

#: ``module_command``'s program: import redray from its file, then run the
#: module named by argv[1] as ``-m`` does (the working directory first on
#: ``sys.path``, for the driver's modules; ``sys.argv`` as ``-m`` sets it).
#: With ``defer`` the package's ``__init__`` (the public API) is left for
#: :func:`finish_package_import`: the module's own imports come first.
_PINNED_MAIN = """\
import importlib.util, os, runpy, sys
if sys.path[:1] == [""]:
    sys.path[0] = os.getcwd()
spec = importlib.util.spec_from_file_location(
    "redray", {origin!r}, submodule_search_locations={path!r}
)
package = sys.modules["redray"] = importlib.util.module_from_spec(spec)
if {defer!r}:
    package._finish_import = lambda: spec.loader.exec_module(package)
else:
    spec.loader.exec_module(package)
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""


def module_command(module: str, *args: str, defer_package: bool = False) -> list[str]:
    """The command line that runs redray's ``module`` (``redray.workers.node``)
    in a new process as ``python -m`` would, but with the redray package this
    process imported. Plain ``-m`` puts the working directory first on
    ``sys.path``, so from a directory holding a ``redray/`` folder the child
    would import that folder instead (another version, or not redray at all).
    ``defer_package``: the module calls :func:`finish_package_import` before
    anything uses ``redray``'s public API (a node: after it said it is up)."""
    spec = redray.__spec__
    origin = spec.origin if spec is not None else None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if origin is None or not locations or not os.path.isfile(origin):
        return [sys.executable, "-m", module, *args]  # not from plain files (a zip): as it is
    code = _PINNED_MAIN.format(origin=origin, path=locations, defer=defer_package)
    return [sys.executable, "-c", code, module, *args]


def finish_package_import() -> None:
    """Run the redray package's ``__init__`` if ``module_command`` deferred
    it; nothing otherwise (``python -m``, or done already)."""
    finish = vars(redray).pop("_finish_import", None)
    if finish is not None:
        finish()


def spawn_node(
    config: dict[str, Any],
    *,
    env: dict[str, str] | None = None,
    stdout: IO[bytes] | int | None = None,
    stderr: IO[bytes] | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a node agent in a session of its own; its configuration is
    written to its stdin, which is then closed."""
    proc = subprocess.Popen(
        module_command("redray.workers.node", CONFIG_FROM_STDIN, defer_package=True),
        env=env,
        stdin=subprocess.PIPE,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(config).encode())
    except BrokenPipeError:
        pass  # it died at start; the caller's wait reports its exit
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    return proc


def read_config(args: list[str]) -> dict[str, Any]:
    """The configuration a node was started with: from stdin (``-``), or, for
    a node started by hand, as a JSON argument."""
    if not args:
        raise SystemExit("usage: python -m redray.workers.node - < config.json")
    raw = sys.stdin.read() if args[0] == CONFIG_FROM_STDIN else args[0]
    config = json.loads(raw)
    if not isinstance(config, dict):
        raise SystemExit("the node's configuration must be a JSON object")
    return config


class NodeStartError(RuntimeError):
    """A node did not come up: it exited first (``exit_code``), or the
    timeout passed (``exit_code`` None; ``redis_error`` is the last failure
    to reach the server, if any)."""

    def __init__(
        self, message: str, exit_code: int | None, redis_error: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.redis_error = redis_error


def wait_node_ready(
    settings: Settings, node_id: str, proc: subprocess.Popen[bytes] | None, timeout: float
) -> None:
    """Block until node ``node_id`` says it is up (its ready list), riding out
    blips of the server; NodeStartError if ``proc`` exits first or
    ``timeout`` seconds pass."""
    client = connections.single_shot(settings)
    key = Keys(settings.prefix).node_ready(node_id)
    deadline = time.monotonic() + timeout
    failure: BaseException | None = None
    try:
        while time.monotonic() < deadline:
            try:
                got = connections.blocking_call(client, 0.5, "BLPOP", key, 0.5)
            except connections.TRANSIENT as exc:
                failure, got = exc, None
                time.sleep(0.05)
            if got is not None:
                client.delete(key)
                return
            if proc is not None and proc.poll() is not None:
                raise NodeStartError(
                    f"the node exited with code {proc.returncode}", proc.returncode
                )
        raise NodeStartError(f"the node did not start within {timeout} s", None, failure)
    finally:
        client.close()
