"""Retries as in Ray: max_retries for crashes, retry_exceptions for errors."""

from __future__ import annotations

import os

import pytest

import redray
from redray.exceptions import WorkerCrashedError


@redray.remote
def flaky(counter_file: str, failures: int) -> int:
    """Fails with ValueError the first ``failures`` times, then returns the attempt."""
    attempt = 1
    if os.path.exists(counter_file):
        attempt = int(open(counter_file).read()) + 1
    with open(counter_file, "w") as f:
        f.write(str(attempt))
    if attempt <= failures:
        raise ValueError(f"attempt {attempt}")
    return attempt


def test_application_errors_are_not_retried_by_default(cluster, tmp_path):
    with pytest.raises(ValueError, match="attempt 1"):
        redray.get(flaky.remote(str(tmp_path / "n"), 1))


def test_retry_exceptions_true_retries_application_errors(cluster, tmp_path):
    ref = flaky.options(retry_exceptions=True, max_retries=2).remote(str(tmp_path / "n"), 2)
    assert redray.get(ref, timeout=30) == 3


def test_retry_exceptions_list_retries_only_those_classes(cluster, tmp_path):
    ref = flaky.options(retry_exceptions=[KeyError], max_retries=2).remote(str(tmp_path / "n"), 1)
    with pytest.raises(ValueError, match="attempt 1"):
        redray.get(ref, timeout=30)
    ref = flaky.options(retry_exceptions=[ValueError], max_retries=2).remote(str(tmp_path / "m"), 1)
    assert redray.get(ref, timeout=30) == 2


def test_after_the_budget_the_last_error_is_raised(cluster, tmp_path):
    ref = flaky.options(retry_exceptions=True, max_retries=1).remote(str(tmp_path / "n"), 5)
    with pytest.raises(ValueError, match="attempt 2"):
        redray.get(ref, timeout=30)


@redray.remote
def crash_until(counter_file: str, crashes: int) -> int:
    """Kills its own process the first ``crashes`` times, then returns the attempt."""
    attempt = 1
    if os.path.exists(counter_file):
        attempt = int(open(counter_file).read()) + 1
    with open(counter_file, "w") as f:
        f.write(str(attempt))
    if attempt <= crashes:
        os._exit(1)
    return attempt


def test_a_crashed_task_is_rerun_within_max_retries(cluster, tmp_path):
    ref = crash_until.options(max_retries=2).remote(str(tmp_path / "n"), 2)
    assert redray.get(ref, timeout=60) == 3


def test_after_max_retries_crashes_get_raises_worker_crashed_error(cluster, tmp_path):
    counter = tmp_path / "n"
    ref = crash_until.options(max_retries=2).remote(str(counter), 10)
    with pytest.raises(WorkerCrashedError, match="max_retries=2"):
        redray.get(ref, timeout=60)
    assert counter.read_text() == "3"  # the first run and two retries, no more


def test_max_retries_minus_one_retries_for_ever(cluster, tmp_path):
    ref = crash_until.options(max_retries=-1).remote(str(tmp_path / "n"), 6)
    assert redray.get(ref, timeout=90) == 7


def test_default_max_retries_is_three(cluster, tmp_path):
    counter = tmp_path / "n"
    with pytest.raises(WorkerCrashedError):
        redray.get(crash_until.remote(str(counter), 10), timeout=60)
    assert counter.read_text() == "4"
