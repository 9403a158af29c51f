"""Options redray accepts so that Ray programs run unchanged, but cannot honour.

Each one given a value that asks for something redray does not do warns once
per process (a program that sets ``scheduling_strategy="SPREAD"`` on every
call gets one warning, not thousands). Ray's defaults and the values that ask
for nothing stay silent.

This module imports nothing from redray, so ``init`` and the option checks of
tasks, actors and methods all use it without an import cycle.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

#: the ``runtime_env`` fields redray applies (``working_dir`` and
#: ``py_modules``: local directories shipped through Redis, redray/runtime_env.py);
#: the refused ones below raise ValueError, the others warn once and are ignored
SUPPORTED_RUNTIME_ENV_FIELDS = frozenset({"env_vars", "working_dir", "py_modules", "excludes"})

#: the ``runtime_env`` fields that install software: refused, never ignored
REFUSED_RUNTIME_ENV_FIELDS = ("pip", "conda", "uv", "container", "image_uri")

_NO_PLACEMENT = "redray has no placement groups: tasks go to any node with free resources"
_BY_FIT = "redray places work on any node whose free resources fit it"

#: option -> (the values that stay silent, what redray does instead)
Table = Mapping[str, tuple[tuple[Any, ...], str]]

_SCHEDULING: Table = {
    "scheduling_strategy": ((None, "DEFAULT"), _BY_FIT),
    "accelerator_type": (
        (None,),
        "GPUs are scheduled by count only: give the machines a custom resource instead",
    ),
    "object_store_memory": (
        (None,),
        "objects live in the Redis server's memory: bound it with the server's maxmemory",
    ),
    "placement_group": ((None, "default"), _NO_PLACEMENT),
    "placement_group_bundle_index": ((-1,), _NO_PLACEMENT),
    "placement_group_capture_child_tasks": ((None, False), _NO_PLACEMENT),
    "label_selector": ((None, {}), "redray's nodes have no labels"),
    "fallback_strategy": ((None, []), _BY_FIT),
}

#: task options without an effect (those not listed here are honoured;
#: ``enable_task_events`` and ``_metadata`` ask for nothing redray fails to do)
TASK: Table = {
    **_SCHEDULING,
    "max_calls": (
        (None, 0),
        "executors are long-lived processes that are not replaced after a number of calls",
    ),
    "_generator_backpressure_num_objects": (
        (None, -1),
        "a generator's values are published as they are yielded, without back-pressure",
    ),
}

ACTOR: Table = {
    **_SCHEDULING,
    "allow_out_of_order_execution": (
        (None, False),
        "a caller's calls start in the order they were made",
    ),
}

METHOD: Table = {
    "tensor_transport": (
        (None, "object_store", "OBJECT_STORE"),
        "values travel through the Redis server only",
    ),
    "_generator_backpressure_num_objects": (
        (None, -1),
        "a generator's values are published as they are yielded, without back-pressure",
    ),
}

#: what was warned about in this process
_warned: set[str] = set()

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def warn_once(key: str, message: str) -> None:
    """Warn with ``message`` unless ``key`` was warned about in this process;
    the warning names the user's line that gave the option."""
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, UserWarning, stacklevel=_user_stacklevel())


def _user_stacklevel() -> int:
    # the first frame outside the redray package: the caller's decorator,
    # .options() or init() line, however deep redray's own calls are
    frame = sys._getframe(2)
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def is_silent(value: Any, silent: Iterable[Any]) -> bool:
    """Whether ``value`` is one that asks for nothing redray fails to do."""
    try:
        return any(value is v or (type(value) is type(v) and value == v) for v in silent)
    except Exception:  # noqa: BLE001 - a value that cannot be compared was given
        return False


def warn_options(options: Mapping[str, Any], table: Table, what: str) -> None:
    """Warn once for each option in ``options`` that ``table`` lists as
    ignored, unless its value is a silent one. ``what`` names where the
    option was given: ``"task"``, ``"actor"``, ``"actor method"``."""
    for name, value in options.items():
        entry = table.get(name)
        if entry is not None and not is_silent(value, entry[0]):
            warn_once(f"{what}.{name}", f"redray ignores the {what} option {name}=...: {entry[1]}.")


def warn_runtime_env(runtime_env: Mapping[str, Any] | None, given_in: str) -> None:
    """ValueError for a ``runtime_env`` field that installs software or has
    the wrong type; warn once for each other field redray does not apply."""
    env = runtime_env or {}
    for field_name in REFUSED_RUNTIME_ENV_FIELDS:
        if env.get(field_name):
            raise ValueError(
                f"redray does not support the {field_name!r} field of {given_in}: redray "
                "does not install packages or images. Install them on every machine of the "
                "cluster instead (and drop the field)."
            )
    _check_files(env, given_in)
    for field_name in sorted(set(env) - SUPPORTED_RUNTIME_ENV_FIELDS):
        if field_name in REFUSED_RUNTIME_ENV_FIELDS:
            continue  # given empty: asks for nothing
        warn_once(
            f"runtime_env.{field_name}",
            f"redray ignores the {field_name!r} field of {given_in}: it applies only "
            "'env_vars', 'working_dir', 'py_modules' and 'excludes'.",
        )


def _check_files(env: Mapping[str, Any], given_in: str) -> None:
    """TypeError, in Ray's words, for a ``working_dir``, ``py_modules`` or
    ``excludes`` of the wrong type (the paths are checked when packed)."""
    working_dir = env.get("working_dir")
    if working_dir is not None and not isinstance(working_dir, (str, os.PathLike)):
        raise TypeError(
            f"working_dir of {given_in} must be a string or a path, got {type(working_dir)}"
        )
    modules = env.get("py_modules")
    if modules is not None and not isinstance(modules, (list, tuple)):
        raise TypeError(f"py_modules of {given_in} must be a list, got {type(modules)}")
    excludes = env.get("excludes")
    if excludes is not None and (
        not isinstance(excludes, (list, tuple)) or not all(isinstance(e, str) for e in excludes)
    ):
        raise TypeError(f"excludes of {given_in} must be a list of strings, got {excludes!r}")
