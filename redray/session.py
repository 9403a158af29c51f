"""The runtime of this process (Ray's "global worker"), found by everything
that needs it without importing the API module.

``redray.api`` installs the runtime at ``init`` (and an executor installs its
own); remote functions, actor handles, ObjectRefs and the runtime context read
it here. A call that needs a cluster before ``init`` starts one through the
hook ``api`` registers, as Ray does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import object_ref

if TYPE_CHECKING:
    from .runtime import Runtime

_runtime: list[Runtime | None] = [None]
#: set by redray.api: starts a local cluster (``init()``)
_auto_init: list[Callable[[], None]] = []


def register_auto_init(fn: Callable[[], None]) -> None:
    _auto_init[:] = [fn]


def current_runtime(required: bool = True, auto_init: bool = False) -> Runtime:
    rt = _runtime[0]
    if rt is None:
        if auto_init and _auto_init:
            _auto_init[0]()
            rt = _runtime[0]
        if rt is None and required:
            raise RuntimeError(
                "redray is not initialized: call redray.init() first (or use a remote function, "
                "which starts a local cluster)."
            )
    return rt  # type: ignore[return-value]


def set_runtime(runtime: Runtime | None) -> None:
    """Install (or, with None, remove) this process's runtime."""
    _runtime[0] = runtime


def is_initialized() -> bool:
    return _runtime[0] is not None


object_ref.find_runtime[0] = lambda: _runtime[0]
