"""cancel(): pending, running (KeyboardInterrupt), force, recursive, actor calls."""

from __future__ import annotations

import asyncio
import time

import pytest

import redray
from redray.exceptions import TaskCancelledError, WorkerCrashedError


@redray.remote
def sleeper(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@redray.remote
def watch_for_cancel(marker: str) -> str:
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        open(marker, "w").close()
        raise
    return "not interrupted"


@redray.remote
def parent_of_sleeper() -> str:
    return redray.get(sleeper.remote(60))


@redray.remote
def is_canceled_seen(marker: str) -> bool:
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            time.sleep(0.05)
    except KeyboardInterrupt:
        open(marker, "w").write(str(redray.get_runtime_context().is_canceled()))
        raise
    return False


@redray.remote
class Sleepy:
    async def nap(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "rested"


def _wait_running(ref: redray.ObjectRef, timeout: float = 10) -> None:
    """Until the task that produces ``ref`` has been claimed by an executor."""
    rt = redray.api.current_runtime()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = rt.client.hget(rt.keys.task_state, ref.task_id())
        if state is not None and state.startswith(b"R"):
            time.sleep(0.2)  # let it enter the user's code
            return
        time.sleep(0.02)
    raise AssertionError("task never started")


def test_running_task_gets_keyboard_interrupt(cluster, tmp_path):
    marker = tmp_path / "interrupted"
    ref = watch_for_cancel.remote(str(marker))
    _wait_running(ref)
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    assert marker.exists()


def test_force_cancel_kills_the_executor_and_is_not_retried(cluster):
    ref = sleeper.options(max_retries=3).remote(60)
    _wait_running(ref)
    redray.cancel(ref, force=True)
    with pytest.raises(WorkerCrashedError):
        redray.get(ref, timeout=20)
    # the node replaced the executor
    assert redray.get(sleeper.remote(0), timeout=20) == "done"


def test_recursive_cancel_reaches_the_child(cluster):
    ref = parent_of_sleeper.remote()
    _wait_running(ref)
    time.sleep(0.5)  # the child is submitted and running
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    # both CPUs come back: the child was cancelled too
    deadline = time.monotonic() + 20
    while redray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redray.available_resources().get("CPU", 0) == 2


def test_is_canceled_is_true_inside_a_cancelled_task(cluster, tmp_path):
    marker = tmp_path / "seen"
    ref = is_canceled_seen.remote(str(marker))
    _wait_running(ref)
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    assert marker.read_text() == "True"


def test_cancelling_a_finished_task_changes_nothing(cluster):
    ref = sleeper.remote(0)
    assert redray.get(ref) == "done"
    redray.cancel(ref)
    assert redray.get(ref) == "done"


def test_running_async_actor_call_is_cancelled(cluster):
    actor = Sleepy.remote()
    ref = actor.nap.remote(60)
    time.sleep(1.0)
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    assert redray.get(actor.nap.remote(0), timeout=20) == "rested"


def test_force_cancel_of_an_actor_call_is_a_value_error(cluster):
    actor = Sleepy.remote()
    with pytest.raises(ValueError):
        redray.cancel(actor.nap.remote(0), force=True)


@redray.remote
class Busy:
    def __init__(self) -> None:
        self.ran: list[str] = []

    def hold(self, seconds: float) -> str:
        time.sleep(seconds)
        return "held"

    def note(self, name: str) -> str:
        self.ran.append(name)
        return name

    def history(self) -> list[str]:
        return self.ran


def test_pending_actor_call_is_dropped_and_never_runs(cluster):
    actor = Busy.remote()
    blocker = actor.hold.remote(1.5)
    doomed = actor.note.remote("doomed")
    kept = actor.note.remote("kept")
    redray.cancel(doomed)
    with pytest.raises(TaskCancelledError):
        redray.get(doomed, timeout=20)
    assert redray.get([blocker, kept], timeout=20) == ["held", "kept"]
    assert redray.get(actor.history.remote(), timeout=20) == ["kept"]


def test_cancelled_task_is_not_retried_even_with_retry_exceptions(cluster, tmp_path):
    marker = tmp_path / "interrupted"
    ref = watch_for_cancel.options(max_retries=3, retry_exceptions=True).remote(str(marker))
    _wait_running(ref)
    redray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    time.sleep(0.5)
    assert redray.available_resources().get("CPU", 0) == 2  # nothing runs it again


def test_non_recursive_cancel_leaves_the_child_running(cluster):
    ref = parent_of_sleeper.remote()
    _wait_running(ref)
    time.sleep(0.5)  # the child is submitted and running
    redray.cancel(ref, recursive=False)
    with pytest.raises(TaskCancelledError):
        redray.get(ref, timeout=20)
    time.sleep(0.5)
    assert redray.available_resources().get("CPU", 0) == 1  # the child still holds one
