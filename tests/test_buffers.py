"""The private copy a large ``put`` makes (redray/buffers.py): exact, frozen,
and split among threads without leaving a buffer exported."""

from __future__ import annotations

import mmap

import numpy as np
import pytest

from redray import buffers


def test_parallel_copy_is_taken_and_exact_for_an_uneven_size(parallel_copies: None) -> None:
    n = 3 * buffers._CHUNK_ALIGN + 12345  # the last chunk is short
    source = np.random.default_rng(1).integers(0, 255, n, dtype=np.uint8)
    target = bytearray(n)
    assert buffers._parallel_copy(memoryview(target), memoryview(source))
    assert target == source.tobytes()


def test_frozen_copy_of_read_only_bytes_matches(parallel_copies: None) -> None:
    data = bytes(range(256)) * (5 * 4096 + 3)
    copy = buffers.frozen_copy(data)
    assert copy.readonly
    assert copy.tobytes() == data


def test_frozen_copy_does_not_see_later_changes(parallel_copies: None) -> None:
    source = np.arange(1_000_000, dtype=np.int64)
    copy = buffers.frozen_copy(source)
    source[:] = -1
    assert np.frombuffer(copy, dtype=np.int64)[-1] == 999_999


def test_frozen_copy_of_a_slice_copies_only_the_slice(parallel_copies: None) -> None:
    data = bytearray(b"ab" * (2 * buffers.HUGE))
    copy = buffers.frozen_copy(memoryview(data)[1:-1])
    assert copy.nbytes == len(data) - 2
    assert copy.tobytes() == bytes(data[1:-1])


def test_parallel_copy_leaves_neither_buffer_exported(parallel_copies: None) -> None:
    n = 2 * buffers.HUGE
    source = bytearray(b"x" * n)
    target = buffers.allocate(n)
    with memoryview(target) as t, memoryview(source) as s:
        assert buffers._parallel_copy(t, s)
    source.extend(b"y")  # a bytearray with an export left could not resize
    if isinstance(target, mmap.mmap):
        target.close()  # nor could an mmap be closed


@pytest.mark.parametrize("size", [10, buffers.HUGE - 1, buffers.HUGE, 3 * buffers.HUGE + 5])
def test_frozen_copy_is_an_independent_read_only_copy(size):
    source = bytearray(b"ab" * (size // 2) + b"c" * (size % 2))
    copy = buffers.frozen_copy(source)
    source[0:2] = b"zz"
    assert copy.readonly and copy.nbytes == size
    assert bytes(copy[:2]) == b"ab"[: min(size, 2)]


def test_allocate_gives_zeroed_writable_buffers():
    for size in (100, buffers.HUGE * 2):
        buf = buffers.allocate(size)
        view = memoryview(buf)
        assert view.nbytes == size and not view.readonly
        assert bytes(view[-8:]) == b"\0" * 8
        view[0] = 1
        view.release()


MiB = 1024 * 1024


@pytest.fixture
def allocations(monkeypatch):
    """The buffers ``frozen_copy`` allocates afresh (not reused), counted;
    nothing kept from earlier tests."""
    monkeypatch.setattr(buffers, "_kept", type(buffers._kept)(maxlen=buffers.KEEP))
    made: list[int] = []
    allocate = buffers.allocate

    def counted(size: int):
        made.append(size)
        return allocate(size)

    monkeypatch.setattr(buffers, "allocate", counted)
    return made


def test_a_copy_made_after_the_last_one_was_freed_reuses_its_buffer(allocations):
    first = buffers.frozen_copy(np.ones(MiB))
    del first
    second = buffers.frozen_copy(np.full(MiB, 2.0))
    assert allocations == [8 * MiB]
    assert np.array_equal(np.frombuffer(second), np.full(MiB, 2.0))


@pytest.mark.parametrize(
    "keep",
    [
        lambda view: np.frombuffer(view),  # the array get() returns
        lambda view: view[10:20],  # a slice of the object's view
        lambda view: memoryview(view.obj),  # another view of the buffer
    ],
)
def test_a_buffer_still_in_use_is_never_reused(allocations, keep):
    first = buffers.frozen_copy(np.ones(MiB))
    kept = keep(first)
    before = bytes(kept)
    del first
    second = buffers.frozen_copy(np.full(MiB, 2.0))
    assert len(allocations) == 2
    assert bytes(kept) == before  # the old object's bytes are untouched
    assert np.array_equal(np.frombuffer(second), np.full(MiB, 2.0))


def test_a_free_buffer_of_another_size_is_let_go(allocations):
    first = buffers.frozen_copy(np.ones(MiB))
    del first
    second = buffers.frozen_copy(np.ones(2 * MiB))
    assert allocations == [8 * MiB, 16 * MiB]
    assert [len(buf) for buf in buffers._kept] == [16 * MiB]  # the 8 MiB one went
    del second


def test_a_copy_larger_than_keep_max_is_not_kept(allocations, monkeypatch):
    monkeypatch.setattr(buffers, "KEEP_MAX", 4 * MiB)
    copy = buffers.frozen_copy(np.ones(MiB))  # 8 MiB
    assert len(buffers._kept) == 0
    del copy
