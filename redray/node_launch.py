"""Starting a node agent process (``python -m redray.workers.node``).

The node's configuration holds the cluster's address, which may carry its
password, so it travels on the child's standard input, never on its command
line: ``ps`` shows every process's arguments to every local user, and the
node's executors (forked from it) would show them too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import IO, Any

#: the node's argument that says "read the configuration from stdin"
CONFIG_FROM_STDIN = "-"


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
        [sys.executable, "-m", "redray.workers.node", CONFIG_FROM_STDIN],
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
