"""runtime_env ``working_dir`` and ``py_modules``: local directories packed on
the driver and shipped to the workers through Redis.

Each directory (or ``.py`` file) is zipped deterministically (sorted entries,
fixed timestamps and modes, ``excludes`` left out), so the same content gives
the same bytes, and is stored once per job under ``pkg:<job>:<sha256>``
(``SET NX``: re-sending it is harmless), signed like every other payload. The
spec's ``runtime_env`` then names it ``redray://<sha256>``: the local path
means nothing on another machine. Where the task runs,
``workers/runtime_env_cache.py`` fetches, checks and unpacks it once per node.

A path is packed once per job and process: files changed after the first
submission that used it are not picked up (Ray uploads a job's
``working_dir`` once, at ``init``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import stat
import types
import zipfile
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis

from . import constants
from .connections import connection_error
from .signing import PACKAGE

if TYPE_CHECKING:
    from .runtime import Runtime

#: how a packed directory is named in a spec's runtime_env
URI_SCHEME = "redray://"
#: zip entries' timestamp: the earliest a zip can hold, so the bytes are stable
_EPOCH = (1980, 1, 1, 0, 0, 0)

#: (server, prefix, job id, field, absolute path, excludes) -> digest, for
#: what this process uploaded
_uploaded: dict[tuple[str, str, str, str, str, tuple[str, ...]], str] = {}


def is_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(URI_SCHEME)


def digest_of(uri: str) -> str:
    """The SHA-256 a ``redray://`` URI names; ValueError for anything else."""
    digest = uri[len(URI_SCHEME) :] if is_uri(uri) else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"{uri!r} is not a redray package URI (redray://<sha256>)")
    return digest


def resolve(runtime: Runtime, env: dict[str, Any] | None) -> dict[str, Any] | None:
    """``env`` with its local ``working_dir`` and ``py_modules`` uploaded and
    replaced by their URIs (``env`` itself when it names no local files)."""
    if not env or (not env.get("working_dir") and not env.get("py_modules")):
        return env
    excludes = tuple(env.get("excludes") or ())
    out = dict(env)
    working_dir = env.get("working_dir")
    if working_dir and not is_uri(working_dir):
        out["working_dir"] = _upload(runtime, "working_dir", os.fspath(working_dir), excludes)
    modules = env.get("py_modules")
    if modules:
        out["py_modules"] = [
            m if is_uri(m) else _upload(runtime, "py_modules", _module_path(m), excludes)
            for m in modules
        ]
    return out


def _module_path(module: Any) -> str:
    """A ``py_modules`` entry's local path: a path, or an imported module (its package)."""
    if isinstance(module, types.ModuleType):
        file = getattr(module, "__file__", None)
        if not file:
            raise ValueError(f"py_modules entry {module!r} has no file to ship")
        if os.path.basename(file) == "__init__.py":
            return os.path.dirname(str(file))
        return str(file)
    if not isinstance(module, (str, os.PathLike)):
        raise TypeError(f"py_modules entries must be paths or modules, got {module!r}")
    return os.fspath(module)


def _upload(runtime: Runtime, field: str, path: str, excludes: tuple[str, ...]) -> str:
    if "://" in path:
        raise ValueError(
            f"runtime_env {field} {path!r}: redray ships local directories only; it "
            "does not fetch remote URIs (download it on every machine instead)."
        )
    full = os.path.abspath(path)
    known = (runtime.settings.display, runtime.keys.prefix, runtime.job_id, field, full, excludes)
    digest = _uploaded.get(known)
    if digest is None:
        blob = pack(full, field, excludes)
        digest = hashlib.sha256(blob).hexdigest()
        upload(runtime, digest, blob)
        _uploaded[known] = digest
    return URI_SCHEME + digest


def upload(runtime: Runtime, digest: str, blob: bytes) -> None:
    """Store a package once per job (``SET NX``, a job key: its cleanup deletes it)."""
    keys = runtime.keys
    key = keys.package(runtime.job_id, digest)
    sealed = runtime.signer.seal(PACKAGE, key, blob)
    try:
        with runtime.client.pipeline(transaction=False) as pipe:
            pipe.set(key, sealed, nx=True)
            pipe.sadd(keys.job_keys(runtime.job_id), key)
            pipe.execute()
    except redis.ConnectionError as exc:
        raise connection_error(runtime.settings, exc) from exc


def pack(path: str, field: str, excludes: Iterable[str] = ()) -> bytes:
    """The deterministic zip of a directory (its contents at the zip's root;
    a ``py_modules`` directory under its own name) or of one ``.py`` file."""
    cap = constants.MAX_PACKAGE_BYTES
    patterns = list(excludes)
    if os.path.isfile(path) and field == "py_modules" and path.endswith(".py"):
        files = [(os.path.basename(path), path)]
    elif os.path.isdir(path):
        prefix = os.path.basename(os.path.normpath(path)) + "/" if field == "py_modules" else ""
        files = [(prefix + rel, full) for rel, full in _walk(path, patterns)]
    else:
        raise ValueError(
            f"runtime_env {field} {path!r} is not a local directory"
            + (" or .py file" if field == "py_modules" else "")
            + "."
        )
    total = 0
    for _, full in files:
        total += os.path.getsize(full)
        if total > cap:
            raise ValueError(_too_large(field, path, f"more than {cap}"))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, full in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            executable = os.stat(full).st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(full, "rb") as f:
                zf.writestr(info, f.read())
    blob = out.getvalue()
    if len(blob) > cap:
        raise ValueError(_too_large(field, path, str(len(blob))))
    return blob


def _too_large(field: str, path: str, size: str) -> str:
    return (
        f"runtime_env {field} {path!r} is too large to ship: {size} bytes, over the "
        f"{constants.MAX_PACKAGE_BYTES}-byte limit. Leave out large files with "
        "runtime_env['excludes'] (e.g. ['*.bin', 'data/']) and ship data through "
        "ray.put or shared storage instead."
    )


def _walk(root: str, patterns: list[str]) -> list[tuple[str, str]]:
    """(relative path with '/', full path) of the files under ``root`` that
    ``patterns`` do not exclude; symlinked directories are not followed."""
    found: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if not excluded(rel_dir + d, True, patterns))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not excluded(rel_dir + name, False, patterns):
                found.append((rel_dir + name, full))
    return found


def excluded(rel: str, is_dir: bool, patterns: Iterable[str]) -> bool:
    """Whether ``rel`` (relative to the shipped directory, '/'-separated)
    matches a gitignore-style pattern: ``name`` or ``*.ext`` match at any
    depth, ``a/b`` or ``/a`` from the root, a trailing ``/`` only directories.
    An excluded directory's contents are excluded with it."""
    name = rel.rsplit("/", 1)[-1]
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        if "/" in pattern:
            if fnmatch.fnmatchcase(rel, pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False
