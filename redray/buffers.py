"""Large buffers for object payloads.

Most of the cost of copying a 100 MB array into a fresh buffer is not the copy
(about 5 ms here) but the kernel faulting in and zeroing 25,600 pages of 4 KiB
(about 35 ms). A buffer of at least ``HUGE`` bytes is therefore private
anonymous memory advised to use transparent huge pages, where the kernel
offers them (Linux ``madvise`` mode): it then maps 2 MiB pages, and the same
copy takes under 10 ms. Anywhere else it is an ordinary ``bytearray``.

One thread copies (and faults in) at most some 7 GB/s on the machines this was
measured on: a copy of at least ``PARALLEL`` bytes is split among up to
``COPY_THREADS`` threads, each ``memmove`` run without the GIL (2 threads: 24
to 11 ms for 100 MB), as Ray's object store copies large buffers.

Even with huge pages, faulting in and zeroing a fresh buffer is half of a
100 MB copy (12 ms fresh, 6 ms into pages already mapped). So the last
``KEEP`` copies' buffers (each at most ``KEEP_MAX`` bytes) are kept, and a
new copy of the same size reuses one that nothing else refers to any more:
no view, array or export of the old object is left (each would hold a
reference to the buffer). This is what an object store's preallocated memory
does; it holds at most ``KEEP * KEEP_MAX`` bytes after the objects are gone.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from collections import deque
from typing import Any

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
    buf = _reusable(view.nbytes) or allocate(view.nbytes)
    with memoryview(buf) as target:
        if view.nbytes < PARALLEL or _threads() < 2 or not _parallel_copy(target, view):
            target[:] = view
    if isinstance(buf, mmap.mmap) and view.nbytes <= KEEP_MAX and _FREE_REFS:
        with _kept_lock:
            _kept.append(buf)
    return memoryview(buf).toreadonly()


#: How many recent copies' buffers are kept for reuse, and the largest kept.
KEEP = 2
KEEP_MAX = 256 * 1024 * 1024
_kept: deque[mmap.mmap] = deque(maxlen=KEEP)
_kept_lock = threading.Lock()


def _counts(kept: deque[mmap.mmap]) -> list[int]:
    """``sys.getrefcount`` of each kept buffer, always taken this one way."""
    return [sys.getrefcount(buf) for buf in kept]


def _refs_when_free() -> int:
    """What ``_counts`` says of a buffer nothing else refers to (0: it
    cannot tell, as where reference counts do not count: never reuse)."""
    probe: deque[mmap.mmap] = deque([mmap.mmap(-1, mmap.PAGESIZE)])
    try:
        [free] = _counts(probe)
        with memoryview(probe[0]):
            [held] = _counts(probe)
        return free if held > free else 0
    finally:
        probe[0].close()


def _reusable(size: int) -> mmap.mmap | None:
    """A kept buffer of ``size`` bytes that nothing but this module holds;
    free buffers of other sizes are let go (kept, they would only hold memory)."""
    with _kept_lock:
        counts = _counts(_kept)  # first: every reference taken below adds one
        free = [buf for buf, count in zip(_kept, counts) if count == _FREE_REFS]
        found = next((buf for buf in free if len(buf) == size), None)
        for buf in free:
            _kept.remove(buf)
        return found


_FREE_REFS = _refs_when_free()


#: Copies at least this large are split among threads.
PARALLEL = 16 * 1024 * 1024
#: The most threads one copy uses.
COPY_THREADS = 4
#: Chunks are whole huge pages, so that no two threads fault in the same one.
_CHUNK_ALIGN = 2 * 1024 * 1024


def _threads() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return min(COPY_THREADS, cpus)


class _PyBuffer(ctypes.Structure):
    # CPython's Py_buffer (Include/pybuffer.h): only ``buf`` is read here
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.py_object),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


def _buffer_api() -> tuple[Any, Any] | None:
    """Private prototypes of PyObject_GetBuffer / PyBuffer_Release (not
    ``ctypes.pythonapi``'s, which other code may have typed its own way)."""
    try:
        lib = ctypes.pythonapi
        get = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_void_p, ctypes.c_int)(
            ("PyObject_GetBuffer", lib)
        )
        release = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(("PyBuffer_Release", lib))
    except (AttributeError, OSError, TypeError):
        return None  # not CPython
    return get, release


_API = _buffer_api()


def _parallel_copy(target: memoryview, source: memoryview) -> bool:
    """Copy ``source`` into ``target`` (same size, both contiguous bytes) on
    several threads; False where addresses cannot be had (not CPython).
    Py_buffer gives the address of a read-only source too, which ctypes'
    ``from_buffer`` refuses; both stay exported until the copy is done."""
    if _API is None:
        return False
    get, release = _API
    held_dst, held_src = _PyBuffer(), _PyBuffer()
    if get(target, ctypes.byref(held_dst), 0) != 0:
        return False
    try:
        if get(source, ctypes.byref(held_src), 0) != 0:
            return False
        try:
            dst, src, n = held_dst.buf, held_src.buf, source.nbytes
            step = -(-n // _threads())
            step = -(-step // _CHUNK_ALIGN) * _CHUNK_ALIGN
            chunks = [(dst + o, src + o, min(step, n - o)) for o in range(0, n, step)]
            workers = [
                threading.Thread(target=ctypes.memmove, args=c, daemon=True) for c in chunks[1:]
            ]
            for w in workers:
                w.start()
            ctypes.memmove(*chunks[0])
            for w in workers:
                w.join()
        finally:
            release(ctypes.byref(held_src))
    finally:
        release(ctypes.byref(held_dst))
    return True
