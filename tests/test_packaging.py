"""The built wheel installs only ``redray`` and works from site-packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (whl,) = out.glob("redray-*.whl")
    return whl


def test_wheel_holds_only_the_redray_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.startswith("redray-")}
    assert top == {"redray"}
    assert "redray/workers/node.py" in names
    assert "redray/cli/main.py" in names
    assert "redray/lua/claim.lua" in names
    assert "redray/py.typed" in names
    assert {f"redray/dashboard/static/{n}" for n in ("index.html", "app.js", "style.css")} <= set(
        names
    )


def test_wheel_runs_a_task_from_its_install_dir(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-compile",
            "--quiet",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    script = (
        "import redray, redray.workers.node, redray.cli.main, sys\n"
        f"assert redray.__file__.startswith({str(target)!r}), redray.__file__\n"
        "@redray.remote\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "print(redray.get(add.remote(2, 3)))\n"
        "redray.shutdown()\n"
    )
    # the wheel's directory first; dependencies still come from this environment
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "5"
