"""wait() and get(): argument checking, num_returns, timeouts, input order."""

from __future__ import annotations

import os
import time

import pytest

import redray
from redray.exceptions import GetTimeoutError


@redray.remote
def echo(x):
    return x


@redray.remote
def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@redray.remote
def hold_until(path, limit=30.0):
    """Holds one CPU until ``path`` exists."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released"


@redray.remote
def fails():
    raise ValueError("failed, but finished")


# -- wait: arguments --------------------------------------------------------------------


def test_wait_on_a_single_ref_is_type_error(cluster):
    with pytest.raises(TypeError):
        redray.wait(redray.put(1))


def test_wait_on_a_tuple_is_type_error(cluster):
    with pytest.raises(TypeError):
        redray.wait((redray.put(1), redray.put(2)))


def test_wait_on_a_list_holding_a_non_ref_is_type_error(cluster):
    with pytest.raises(TypeError):
        redray.wait([redray.put(1), "notaref"])


def test_wait_with_duplicate_refs_is_value_error(cluster):
    ref = redray.put(1)
    with pytest.raises(ValueError):
        redray.wait([ref, ref])


def test_wait_with_num_returns_zero_is_value_error(cluster):
    with pytest.raises(ValueError):
        redray.wait([redray.put(1)], num_returns=0)


def test_wait_with_num_returns_above_the_number_of_refs_is_value_error(cluster):
    with pytest.raises(ValueError):
        redray.wait([redray.put(1), redray.put(2)], num_returns=3)


def test_wait_with_a_negative_timeout_is_value_error(cluster):
    with pytest.raises(ValueError):
        redray.wait([redray.put(1)], timeout=-1)


def test_wait_on_an_empty_list_returns_two_empty_lists(cluster):
    # Ray returns ([], []) for an empty list before checking num_returns
    assert redray.wait([]) == ([], [])


# -- wait: semantics ----------------------------------------------------------------------


def test_wait_returns_one_ready_ref_by_default(cluster):
    refs = [redray.put(i) for i in range(3)]
    ready, not_ready = redray.wait(refs)
    assert ready == refs[:1]
    assert not_ready == refs[1:]


def test_wait_returns_exactly_num_returns_when_more_are_ready(cluster):
    refs = [redray.put(i) for i in range(5)]
    ready, not_ready = redray.wait(refs, num_returns=2)
    assert len(ready) == 2
    assert len(not_ready) == 3


def test_wait_returns_ready_refs_in_input_order(cluster):
    done = [echo.remote(i) for i in range(4)]
    redray.get(done)
    refs = list(reversed(done))
    ready, not_ready = redray.wait(refs, num_returns=3)
    assert ready == refs[:3]
    assert not_ready == refs[3:]


def test_wait_keeps_not_ready_refs_in_input_order(cluster, tmp_path):
    gate = tmp_path / "gate"
    slow = [hold_until.remote(str(gate)), hold_until.remote(str(gate))]
    fast = redray.put("ready")
    try:
        refs = [slow[1], fast, slow[0]]
        ready, not_ready = redray.wait(refs, num_returns=1, timeout=5)
        assert ready == [fast]
        assert not_ready == [slow[1], slow[0]]
    finally:
        gate.touch()


def test_wait_returns_the_fast_tasks_first(cluster):
    refs = [sleep_then.remote(s, i) for i, s in enumerate([0.1, 0.3, 20, 30])]
    ready, not_ready = redray.wait(refs, num_returns=2, timeout=15)
    assert ready == refs[:2]
    assert not_ready == refs[2:]
    assert redray.get(ready) == [0, 1]
    for ref in not_ready:
        redray.cancel(ref)


def test_wait_all_returns_every_ref_once_all_finish(cluster):
    refs = [sleep_then.remote(s, i) for i, s in enumerate([0.2, 0.0, 0.1])]
    ready, not_ready = redray.wait(refs, num_returns=3, timeout=30)
    assert ready == refs
    assert not_ready == []


def test_wait_timeout_returns_the_partial_split(cluster, tmp_path):
    gate = tmp_path / "gate"
    slow = hold_until.remote(str(gate))
    fast = echo.remote("quick")
    assert redray.get(fast) == "quick"
    try:
        ready, not_ready = redray.wait([slow, fast], num_returns=2, timeout=0.5)
        assert ready == [fast]
        assert not_ready == [slow]
    finally:
        gate.touch()


def test_wait_timeout_with_nothing_ready_returns_all_not_ready(cluster, tmp_path):
    gate = tmp_path / "gate"
    slow = [hold_until.remote(str(gate)), hold_until.remote(str(gate))]
    try:
        ready, not_ready = redray.wait(slow, num_returns=1, timeout=0.3)
        assert ready == []
        assert not_ready == slow
    finally:
        gate.touch()


def test_wait_with_zero_timeout_reports_a_running_task_not_ready(cluster, tmp_path):
    gate = tmp_path / "gate"
    slow = hold_until.remote(str(gate))
    try:
        assert redray.wait([slow], timeout=0) == ([], [slow])
    finally:
        gate.touch()


def test_wait_with_zero_timeout_sees_a_finished_task(cluster):
    ref = echo.remote("done")
    deadline = time.monotonic() + 20
    ready: list = []
    while not ready and time.monotonic() < deadline:
        ready, not_ready = redray.wait([ref], timeout=0)
    assert ready == [ref]


def test_wait_counts_a_failed_task_as_ready(cluster):
    ref = fails.remote()
    ready, not_ready = redray.wait([ref], timeout=30)
    assert ready == [ref]
    assert not_ready == []
    with pytest.raises(ValueError):
        redray.get(ref)


def test_wait_on_put_refs_is_ready_at_once(cluster):
    refs = [redray.put(i) for i in range(3)]
    assert redray.wait(refs, num_returns=3, timeout=0) == (refs, [])


# -- get: timeouts ----------------------------------------------------------------------------


def test_get_timeout_raises_get_timeout_error(cluster, tmp_path):
    gate = tmp_path / "gate"
    ref = hold_until.remote(str(gate))
    try:
        with pytest.raises(GetTimeoutError):
            redray.get(ref, timeout=0.5)
    finally:
        gate.touch()


def test_get_timeout_error_is_a_timeout_error(cluster, tmp_path):
    gate = tmp_path / "gate"
    ref = hold_until.remote(str(gate))
    try:
        with pytest.raises(TimeoutError):
            redray.get(ref, timeout=0.5)
    finally:
        gate.touch()


def test_get_timeout_on_a_list_raises_when_one_is_not_ready(cluster, tmp_path):
    gate = tmp_path / "gate"
    refs = [redray.put(1), hold_until.remote(str(gate))]
    try:
        with pytest.raises(GetTimeoutError):
            redray.get(refs, timeout=0.3)
    finally:
        gate.touch()


def test_get_raises_a_failed_tasks_error_while_others_in_the_list_are_pending(cluster, tmp_path):
    gate = tmp_path / "gate"
    held = hold_until.remote(str(gate))
    try:
        with pytest.raises(ValueError, match="failed, but finished"):
            redray.get([held, fails.remote()], timeout=60)
        ready, _ = redray.wait([held], timeout=0)
        assert ready == []  # raised before the held task finished
    finally:
        gate.touch()


def test_get_raises_an_error_already_known_without_waiting_for_the_rest(cluster, tmp_path):
    failed = fails.remote()
    redray.wait([failed], timeout=30)
    gate = tmp_path / "gate"
    held = hold_until.remote(str(gate))
    try:
        with pytest.raises(ValueError, match="failed, but finished"):
            redray.get([held, failed], timeout=60)
    finally:
        gate.touch()


def test_get_after_a_timeout_still_returns_the_value(cluster, tmp_path):
    gate = tmp_path / "gate"
    ref = hold_until.remote(str(gate))
    with pytest.raises(GetTimeoutError):
        redray.get(ref, timeout=0.3)
    gate.touch()
    assert redray.get(ref, timeout=30) == "released"


def test_get_with_a_timeout_returns_a_ready_value(cluster):
    assert redray.get(sleep_then.remote(0.05, "v"), timeout=30) == "v"


def test_get_with_zero_timeout_returns_a_ready_value(cluster):
    ref = echo.remote("ready")
    redray.get(ref)
    assert redray.get(ref, timeout=0) == "ready"


def test_get_blocks_until_the_task_finishes_without_a_timeout(cluster):
    assert redray.get(sleep_then.remote(0.3, "slept")) == "slept"
