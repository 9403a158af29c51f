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
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
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
    buf = allocate(view.nbytes)
    with memoryview(buf) as target:
        if view.nbytes < PARALLEL or _threads() < 2 or not _parallel_copy(target, view):
            target[:] = view
    return memoryview(buf).toreadonly()


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
