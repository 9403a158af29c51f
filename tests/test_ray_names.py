"""The README's table of every public Ray Core name stays honest.

Every name the table marks ``supported`` or ``partly`` must exist in redray
(``ray.x.y`` resolved as ``redray.x.y``), and every exception class of Ray's
``ray.exceptions`` must be listed, with Ray's place in the hierarchy. Pure
imports: no Redis server, no cluster.
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import redray.exceptions

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "### Every public Ray Core name"
STATUSES = ("supported", "partly", "not supported")

#: Ray 2.60's ``ray.exceptions``: each public exception class with its direct bases.
RAY_EXCEPTION_BASES: dict[str, tuple[str, ...]] = {
    "ActorAlreadyExistsError": ("ValueError", "RayError"),
    "ActorDiedError": ("RayActorError",),
    "ActorHandleNotFoundError": ("ValueError", "RayError"),
    "ActorPlacementGroupRemoved": ("RayError",),
    "ActorUnavailableError": ("RayActorError",),
    "ActorUnschedulableError": ("RayError",),
    "AsyncioActorExit": ("RayError",),
    "AuthenticationError": ("RayError",),
    "CrossLanguageError": ("RayError",),
    "GetTimeoutError": ("RayError", "TimeoutError"),
    "LocalRayletDiedError": ("RayError",),
    "NodeDiedError": ("RayError",),
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "ObjectFreedError": ("ObjectLostError",),
    "ObjectLostError": ("RayError",),
    "ObjectReconstructionFailedError": ("ObjectLostError",),
    "ObjectRefStreamEndOfStreamError": ("RayError",),
    "ObjectStoreFullError": ("RayError",),
    "OufOfBandObjectRefSerializationException": ("RayError",),
    "OutOfDiskError": ("RayError",),
    "OutOfMemoryError": ("RayError",),
    "OwnerDiedError": ("ObjectLostError",),
    "PendingCallsLimitExceeded": ("RayError",),
    "PlasmaObjectNotAvailable": ("RayError",),
    "RayActorError": ("RayError",),
    "RayCgraphCapacityExceeded": ("RaySystemError",),
    "RayChannelError": ("RaySystemError",),
    "RayChannelTimeoutError": ("RayChannelError", "TimeoutError"),
    "RayDirectTransportError": ("RaySystemError",),
    "RayError": ("Exception",),
    "RaySystemError": ("RayError",),
    "RayTaskError": ("RayError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", "AssertionError"),
    "RpcError": ("RayError",),
    "RuntimeEnvSetupError": ("RayError",),
    "StreamingGeneratorReplayInconsistentError": ("RaySystemError",),
    "TaskCancelledError": ("RayError",),
    "TaskPlacementGroupRemoved": ("RayError",),
    "TaskUnschedulableError": ("RayError",),
    "UnserializableException": ("RayError",),
    "UserCodeException": ("RayError",),
    "WorkerCrashedError": ("RayError",),
}


def _table() -> list[tuple[str, str, str]]:
    """(name, status, notes) for each name of the table (a row may name several)."""
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README.md has no {SECTION!r} section"
    body = text.split(SECTION, 1)[1]
    lines = [line.strip() for line in body.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows: list[tuple[str, str, str]] = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 3, f"a row of the names table has {len(cells)} cells: {line}"
        if cells[0] == "Name" or set(cells[0]) <= {"-", ":"}:
            continue
        names = re.findall(r"`([^`]+)`", cells[0])
        assert names, f"a row of the names table names nothing: {line}"
        for name in names:
            rows.append((name, cells[1], cells[2]))
    return rows


TABLE = _table()
CLAIMED = [(name, status) for name, status, _ in TABLE if status in ("supported", "partly")]


def _instance_attribute(cls: type, attr: str) -> bool:
    """Whether instances of ``cls`` get ``attr`` in ``__init__`` (or another method)."""
    pattern = re.compile(rf"\bself\.{re.escape(attr)}\s*(:[^=]*)?=")
    for klass in cls.__mro__:
        if klass is object:
            continue
        if attr in getattr(klass, "__annotations__", {}):
            return True
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def resolve(name: str) -> Any:
    """The redray object a Ray name stands for: ``ray.a.B.c`` -> ``redray.a.B.c``
    (the longest importable module, then attributes; a class's instance
    attributes count)."""
    assert name == "ray" or name.startswith("ray."), f"{name!r} is not a ray.* name"
    parts = ("redray" + name[3:]).split(".")
    obj: Any = None
    rest: list[str] = []
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        rest = parts[i:]
        break
    assert isinstance(obj, ModuleType)
    for attr in rest:
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            if inspect.isclass(obj) and _instance_attribute(obj, attr):
                return obj
            raise
    return obj


def test_the_table_uses_the_three_statuses_and_names_each_name_once() -> None:
    assert len(TABLE) > 100
    for name, status, _ in TABLE:
        assert status in STATUSES, f"{name}: status {status!r} is none of {STATUSES}"
        assert name == "ray" or name.startswith("ray."), name
    names = [name for name, _, _ in TABLE]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


def test_partly_and_not_supported_rows_say_why() -> None:
    for name, status, notes in TABLE:
        if status != "supported":
            assert notes, f"{name} is {status!r} without a note saying how or why"


@pytest.mark.parametrize(("name", "status"), CLAIMED, ids=[n for n, _ in CLAIMED])
def test_every_supported_or_partly_name_exists_in_redray(name: str, status: str) -> None:
    try:
        resolve(name)
    except (AttributeError, ImportError) as exc:
        pytest.fail(f"the README marks {name} {status!r}, but redray has no such name: {exc}")


def test_every_exception_class_of_ray_is_in_the_table() -> None:
    listed = {
        n.removeprefix("ray.exceptions.") for n, _, _ in TABLE if n.startswith("ray.exceptions.")
    }
    assert set(RAY_EXCEPTION_BASES) <= listed, sorted(set(RAY_EXCEPTION_BASES) - listed)
    assert listed <= set(RAY_EXCEPTION_BASES), sorted(listed - set(RAY_EXCEPTION_BASES))


def _base(name: str) -> type:
    found = getattr(redray.exceptions, name, None) or getattr(builtins, name)
    assert isinstance(found, type)
    return found


EXCEPTION_ROWS = [
    (n.removeprefix("ray.exceptions."), s) for n, s in CLAIMED if n.startswith("ray.exceptions.")
]


@pytest.mark.parametrize(("name", "status"), EXCEPTION_ROWS, ids=[n for n, _ in EXCEPTION_ROWS])
def test_listed_exceptions_sit_where_ray_has_them(name: str, status: str) -> None:
    cls = getattr(redray.exceptions, name)
    assert inspect.isclass(cls) and issubclass(cls, Exception)
    assert name in redray.exceptions.__all__
    bases = RAY_EXCEPTION_BASES[name]
    if "RayError" in bases or any(issubclass(_base(b), redray.exceptions.RayError) for b in bases):
        assert issubclass(cls, redray.exceptions.RayError), f"{name} is not a RayError"
    if status == "supported":
        # with all of Ray's bases ("partly" rows say where they differ)
        for base in bases:
            assert issubclass(cls, _base(base)), f"{name} is not a {base}, as in Ray"


def test_exceptions_defined_for_compatibility_behave_like_exceptions() -> None:
    # constructible with a message, picklable, and caught by Ray's except clauses
    import pickle

    for name in RAY_EXCEPTION_BASES:
        cls = getattr(redray.exceptions, name)
        if name in ("RayTaskError", "TaskCancelledError", "ObjectLostError") or issubclass(
            cls, redray.exceptions.ObjectLostError
        ):
            continue  # their constructors take ids, not a message
        err = cls("something failed")
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is cls
        assert str(again) == str(err)
        if name not in ("ActorPlacementGroupRemoved", "TaskPlacementGroupRemoved"):
            assert "something failed" in str(err)  # these two have Ray's fixed text
