"""``redray.init()`` with no address joins the cluster ``redray start --head``
runs on this machine, as Ray's does; a private cluster only when none runs.

Each test starts the head with the real CLI in a private TMPDIR (the
``redray_tmp`` fixture) and reads the output of a real driver process.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_cli, run_python, server_args

from redray import api
from redray.cli import processes
from redray.cli.main import cli
from redray.server import free_port

#: a driver that says which cluster it joined: its nodes and one task's result
DRIVER = """
import json, redray
redray.init({args})
@redray.remote
def double(x):
    return 2 * x
print(json.dumps({{"nodes": [n["NodeID"] for n in redray.nodes()],
                   "value": redray.get(double.remote(21), timeout=60)}}))
redray.shutdown()
"""


def run_driver(args: str = "") -> tuple[dict[str, object], str]:
    """Run DRIVER with ``init(args)``: its JSON line, and its stderr."""
    done = run_python("-c", DRIVER.format(args=args))
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


@pytest.fixture
def head(redray_tmp: Path) -> Iterator[str]:
    """A head started with ``redray start --head``; its node id. Stopped after."""
    port = str(free_port())
    result = run_cli(
        "start", "--head", "--port", port, "--num-cpus", "1", "--include-dashboard", "false",
        *server_args(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    [node] = [e["node_id"] for e in processes.read_state() if e["kind"] == "node"]
    yield node
    CliRunner().invoke(cli, ["stop"])


def test_init_without_an_address_joins_the_local_head(head: str) -> None:
    joined, _ = run_driver()
    assert joined == {"nodes": [head], "value": 42}


def test_init_local_starts_a_private_cluster_while_a_head_runs(head: str) -> None:
    private, _ = run_driver('address="local"')
    assert private["value"] == 42 and head not in private["nodes"]


def test_init_without_an_address_after_the_head_died_starts_a_private_cluster(
    redray_tmp: Path,
) -> None:
    # what a head killed without `redray stop` leaves: an address nobody answers at
    redray_tmp.mkdir(parents=True, exist_ok=True)
    api.address_file().write_text(f"redis://:pw@127.0.0.1:{free_port()}/0\n")
    private, stderr = run_driver()
    assert private["value"] == 42
    assert "does not answer" in stderr and "starting a new local cluster" in stderr
