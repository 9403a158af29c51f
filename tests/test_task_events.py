"""How an executor's batches add task-event records and trim their list
(redray/task_events.py ``add``): pure logic, on a batch that records commands."""

from __future__ import annotations

from typing import Any

import pytest

from redray import task_events
from redray.constants import Keys

KEYS = Keys("redray")


class RecordingBatch:
    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def command(self, *args: Any) -> None:
        self.commands.append(args)


@pytest.fixture
def capped(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh process's state, with the list capped at ``n`` records."""

    def set_cap(n: int) -> None:
        monkeypatch.setattr(task_events, "cap", lambda: n)

    monkeypatch.setattr(task_events._Untrimmed, "count", None)
    return set_cap


def record(i: int) -> dict[str, str]:
    return {"t": f"task{i}"}


def trims(batch: RecordingBatch) -> list[tuple[Any, ...]]:
    return [c for c in batch.commands if c[0] == "LTRIM"]


def test_the_first_push_of_a_process_trims_the_list(capped: Any) -> None:
    capped(10_000)
    batch = RecordingBatch()
    task_events.add(batch, KEYS, [record(1)])
    assert [c[0] for c in batch.commands] == ["RPUSH", "LTRIM"]
    assert trims(batch) == [("LTRIM", KEYS.task_events, -10_000, -1)]


def test_a_large_cap_is_trimmed_once_per_hundredth_of_it(capped: Any) -> None:
    capped(10_000)
    batches = []
    for i in range(301):
        batch = RecordingBatch()
        task_events.add(batch, KEYS, [record(i)])
        batches.append(batch)
    trimmed_at = [i for i, b in enumerate(batches) if trims(b)]
    # the first push, then each time 100 more records would be left untrimmed
    assert trimmed_at == [0, 101, 202]
    assert all(b.commands[0][0] == "RPUSH" for b in batches)


def test_a_small_cap_is_trimmed_with_every_push(capped: Any) -> None:
    capped(99)
    for i in range(5):
        batch = RecordingBatch()
        task_events.add(batch, KEYS, [record(i)])
        assert trims(batch) == [("LTRIM", KEYS.task_events, -99, -1)]


def test_a_batch_of_many_records_is_trimmed_in_the_same_batch(capped: Any) -> None:
    capped(10_000)
    task_events.add(RecordingBatch(), KEYS, [record(0)])
    batch = RecordingBatch()
    task_events.add(batch, KEYS, [record(i) for i in range(150)])
    assert [c[0] for c in batch.commands] == ["RPUSH", "LTRIM"]


def test_no_records_send_nothing(capped: Any) -> None:
    capped(10)
    batch = RecordingBatch()
    task_events.add(batch, KEYS, [])
    assert batch.commands == []
