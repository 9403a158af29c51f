"""The test harness's own promises: what a fixture starts, it stops, even
when the start fails half-way."""

from __future__ import annotations

from typing import Any

import conftest
import psutil
import pytest


def test_a_node_whose_start_fails_is_stopped_with_its_executors(settings, monkeypatch):
    started: list[Any] = []
    spawn = conftest.spawn_node

    def recorded(*args: Any, **kwargs: Any) -> Any:
        proc = spawn(*args, **kwargs)
        started.append(proc)
        return proc

    def executors_listed_too_late(*args: Any, **kwargs: Any) -> None:
        # the node is up and has forked its executors: take them down too
        started.extend(psutil.Process(started[0].pid).children(recursive=True))
        raise AssertionError("the node's executors not reached in time")

    monkeypatch.setattr(conftest, "spawn_node", recorded)
    monkeypatch.setattr(conftest, "wait_executors_listed", executors_listed_too_late)
    with pytest.raises(AssertionError, match="not reached in time"):
        conftest.start_node(settings, num_cpus=1)
    node, *executors = started
    assert node.poll() is not None
    gone, alive = psutil.wait_procs(executors, timeout=10)
    assert alive == []
