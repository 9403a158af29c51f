"""Remote errors read like Ray's: the user's file, line and source line in
the traceback, ``ip=`` filled, redray's own frames left out.

The functions live in a driver script (``__main__``), so their code travels
by value, as a user's script's does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import run_python

import redray
from redray.settings import Settings

DRIVER = """
import sys
import redray

redray.init(address=sys.argv[1])


@redray.remote
def inner():
    raise ValueError("the distinctive message")


@redray.remote
def outer():
    return redray.get(inner.remote())


try:
    redray.get(outer.remote(), timeout=60)
except Exception as error:
    print(error)
redray.shutdown()
"""


@pytest.fixture
def error_text(settings: Settings, node_factory: Any, tmp_path: Path) -> tuple[str, Path]:
    """What a driver script printed for a task whose nested task raised; the script."""
    node_factory(num_cpus=2)
    script = tmp_path / "user_script.py"
    script.write_text(DRIVER)
    done = run_python(str(script), settings.to_url())
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, script


def test_a_remote_traceback_names_the_users_file_and_line(error_text: tuple[str, Path]) -> None:
    text, script = error_text
    assert f'File "{script}", line 10, in inner' in text
    assert "<dynamic-code>" not in text


def test_a_remote_traceback_shows_the_users_source_line(error_text: tuple[str, Path]) -> None:
    text, _ = error_text
    assert 'raise ValueError("the distinctive message")' in text
    assert "return redray.get(inner.remote())" in text


def test_a_remote_traceback_leaves_out_redrays_own_frames(error_text: tuple[str, Path]) -> None:
    text, _ = error_text
    frames = [line for line in text.splitlines() if line.strip().startswith("File ")]
    assert frames and all("user_script.py" in line for line in frames)


def test_a_remote_error_says_the_ip_of_the_node_it_ran_on(
    error_text: tuple[str, Path], settings: Settings
) -> None:
    text, _ = error_text
    redray.init(address=settings.to_url())
    try:
        [node] = redray.nodes()
    finally:
        redray.shutdown()
    assert node["NodeManagerAddress"]
    assert f"ip={node['NodeManagerAddress']})" in text
    assert "ip=)" not in text
