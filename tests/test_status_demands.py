"""``redray status`` lists what waits, per resource request: queued tasks,
tasks waiting for their inputs, and requests no node can fit."""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
from conftest import run_cli, wait_for

import redray
from redray.demands import read_demands
from redray.settings import Settings


@redray.remote
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@redray.remote
def after(value: float) -> float:
    return value


@pytest.fixture
def backlog(cluster: Any) -> list[Any]:
    """On one 2-CPU node: 2 running, 3 queued, 1 waiting for an input, 1 infeasible."""
    refs = [sleep_for.remote(60) for _ in range(5)]
    refs.append(after.remote(refs[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refs.append(sleep_for.options(resources={"gamma": 1}).remote(0))
    runtime = redray.api.current_runtime()
    wait_for(
        lambda: sum(d.queued for d in read_demands(runtime.client, runtime.keys)) == 4,
        what="2 tasks running, 4 queued",
    )
    return refs


def test_status_shows_queued_tasks_per_resource_request(backlog: Any, settings: Settings) -> None:
    shown = run_cli("status", "--address", settings.to_url())
    assert shown.returncode == 0, shown.stderr
    assert "{CPU: 1}: 3 queued, 1 waiting for their inputs" in shown.stdout


def test_status_marks_a_request_no_node_can_fit_as_infeasible(
    backlog: Any, settings: Settings
) -> None:
    shown = run_cli("status", "--address", settings.to_url())
    line = next(x for x in shown.stdout.splitlines() if "gamma" in x)
    assert "1 queued" in line and "infeasible" in line


def test_status_without_waiting_work_says_none(cluster: Any, settings: Settings) -> None:
    shown = run_cli("status", "--address", settings.to_url())
    assert shown.returncode == 0, shown.stderr
    assert "Demands" in shown.stdout and "(none)" in shown.stdout
