"""Retries as in Ray: max_retries for crashes, retry_exceptions for errors."""

from __future__ import annotations

import os

import pytest

import redray


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
