"""Ray's module path for the runtime context:
``from ray.runtime_context import get_runtime_context``."""

from __future__ import annotations

from .api import get_runtime_context
from .context import RuntimeContext

__all__ = ["RuntimeContext", "get_runtime_context"]
