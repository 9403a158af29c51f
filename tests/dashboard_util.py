"""Helpers of the dashboard tests: a real ``redray dashboard`` process, HTTP
requests to it, and Debian's headless Chromium rendering its page."""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import worker_env

READY = "redray dashboard serving "


@dataclass
class Dashboard:
    process: subprocess.Popen[str]
    url: str

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise


def start_dashboard(
    address: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Dashboard:
    """``redray dashboard --port 0 ARGS`` in a real process, once it listens."""
    cmd = [sys.executable, "-m", "redray.cli.main", "dashboard", "--port", "0", *args]
    if address is not None:
        cmd += ["--address", address]
    full_env = worker_env()
    full_env.update(env or {})
    proc = subprocess.Popen(
        cmd,
        env=full_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector.select(timeout=0.5):
            line = proc.stdout.readline()
            if line.startswith(READY):
                return Dashboard(proc, line[len(READY) :].split()[0])
            if not line and proc.poll() is not None:
                break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"the dashboard did not start (exit {proc.returncode}): {err}")


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """(status, JSON body or text) of a GET."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, body, kind = reply.status, reply.read(), reply.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, body, kind = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    text = body.decode()
    return status, json.loads(text) if kind.startswith("application/json") else text


def chromium() -> str:
    """Debian's Chromium; skips without one unless ``REDRAY_REQUIRE_BROWSER`` is set."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "no chromium on PATH (apt-get install chromium)"
        if os.environ.get("REDRAY_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def browse(url: str, *extra: str, budget_ms: int = 6000, timeout: float = 90) -> str:
    """Headless Chromium loads ``url``, runs its script for ``budget_ms`` of
    virtual time, and prints the DOM (or does what ``extra`` asks)."""
    with tempfile.TemporaryDirectory(prefix="redray-chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *(extra or ("--dump-dom",)),
                url,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
