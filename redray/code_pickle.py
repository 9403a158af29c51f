"""Pickling the code of remote functions and actor classes.

cloudpickle (3.x) writes every code object's file name as ``<dynamic-code>``
(so that a payload does not depend on where it was defined). Remote
tracebacks then name no file and show no source line. redray keeps each code
object whole instead, through ``marshal``, the interpreter's own format for
code: the worker's traceback names the user's file and line, and shows the
line where the file exists on that machine, as Ray's does.

marshal's format is that of the Python version, which drivers and workers
already share (cloudpickle's code objects need it too). Nothing here is
loaded before the cluster's signature on the blob is checked.
"""

from __future__ import annotations

import io
import marshal
import types
from typing import Any

import cloudpickle


class _CodePickler(cloudpickle.Pickler):  # type: ignore[misc]  # cloudpickle is untyped
    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        return super().reducer_override(obj)


def dumps(obj: Any) -> bytes:
    """``cloudpickle.dumps(obj)``, keeping the file names of its code;
    ``cloudpickle.loads`` (plain ``pickle.loads``) reads it."""
    buffer = io.BytesIO()
    _CodePickler(buffer, protocol=5).dump(obj)
    return buffer.getvalue()
