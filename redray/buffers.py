"""Large buffers for object payloads.

Most of the cost of copying a 100 MB array into a fresh buffer is not the copy
(about 5 ms here) but the kernel faulting in and zeroing 25,600 pages of 4 KiB
(about 35 ms). A buffer of at least ``HUGE`` bytes is therefore private
anonymous memory advised to use transparent huge pages, where the kernel
offers them (Linux ``madvise`` mode): it then maps 2 MiB pages, and the same
copy takes under 10 ms. Anywhere else it is an ordinary ``bytearray``.
"""

from __future__ import annotations

import mmap

#: Buffers at least this large are backed by huge pages when possible.
HUGE = 1024 * 1024

_PRIVATE = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)


def allocate(size: int) -> bytearray | mmap.mmap:
    """A writable buffer of ``size`` bytes (zeroed)."""
    if size < HUGE or not _PRIVATE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return bytearray(size)
    buf = mmap.mmap(-1, size, flags=_PRIVATE)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError:
        pass  # the kernel declines: ordinary pages
    return buf


def frozen_copy(data: bytes | bytearray | memoryview | mmap.mmap) -> memoryview:
    """A read-only copy of ``data``: later changes to the original do not show."""
    view = memoryview(data).cast("B")
    if view.nbytes < HUGE:
        return memoryview(bytes(view))
    buf = allocate(view.nbytes)
    with memoryview(buf) as target:
        target[:] = view
    return memoryview(buf).toreadonly()
