"""The node's copies of runtime_env packages, and entering them for a task.

A package (``redray://<sha256>``, see redray/runtime_env.py) is fetched once
per node into ``<tmp>/redray-packages/<prefix>-<node id>/<sha256>``: under a
lock file, the blob is read from Redis, its signature and its SHA-256 are
checked (a forged or changed zip is refused, never unpacked), it is unpacked
into a fresh temporary directory with every entry checked (no path escaping
it, no links, the total size capped) and renamed into place, so concurrent
executors on the node see either nothing or the whole package. The node
agent removes its directory when it stops.

For a task, ``enter`` makes the ``working_dir`` its current directory and the
first entry of ``sys.path``, and puts each ``py_modules`` package's directory
on ``sys.path``; ``leave`` puts the directory and ``sys.path`` back and forgets
the modules imported from the packages, so the next task, maybe of another
job with other files of the same names, imports its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from typing import Any

from redray import constants, dead_letters, session
from redray.exceptions import RuntimeEnvSetupError
from redray.runtime_env import digest_of, is_uri
from redray.signing import PACKAGE, SignatureError

#: bytes of a package once unpacked, at most (a zip bomb is refused past it)
MAX_UNPACKED_BYTES = 2 * constants.MAX_PACKAGE_BYTES
_CHUNK = 1024 * 1024


def node_dir(prefix: str, node_id: str) -> str:
    """Where the node keeps its unpacked packages."""
    return os.path.join(tempfile.gettempdir(), "redray-packages", f"{prefix}-{node_id}")


def remove_node_dir(prefix: str, node_id: str) -> None:
    """The node agent stops: its packages go."""
    shutil.rmtree(node_dir(prefix, node_id), ignore_errors=True)


def ensure(job_id: str, uri: str) -> str:
    """The unpacked directory of the package ``uri`` on this node, fetched
    first if this node has none; RuntimeEnvSetupError if it cannot be had."""
    runtime = session.current_runtime()
    try:
        digest = digest_of(uri)
    except ValueError as exc:
        raise RuntimeEnvSetupError(str(exc)) from None
    root = node_dir(runtime.keys.prefix, runtime.identity.node_id or "driver")
    target = os.path.join(root, digest)
    if os.path.isdir(target):
        return target
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, f".{digest}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return target  # another executor unpacked it while this one waited
        data = _fetch(runtime, job_id, digest)
        scratch = tempfile.mkdtemp(prefix=f".{digest}.", dir=root)
        try:
            unpack(data, scratch)
            os.rename(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    return target


def _fetch(runtime: Any, job_id: str, digest: str) -> bytes:
    key = runtime.keys.package(job_id, digest)
    blob: Any = runtime.client.get(key)
    if blob is None:
        raise RuntimeEnvSetupError(
            f"The runtime_env package {digest[:12]} is gone from Redis (its job ended?)."
        )
    try:
        data = bytes(runtime.signer.open(PACKAGE, key, blob))
    except SignatureError as exc:
        dead_letters.record(runtime.client, runtime.keys, key, f"signature check: {exc}", blob)
        raise RuntimeEnvSetupError(
            f"The runtime_env package {digest[:12]} in Redis failed its signature check, "
            f"so this worker did not unpack it: {exc}."
        ) from None
    if hashlib.sha256(data).hexdigest() != digest:
        dead_letters.record(runtime.client, runtime.keys, key, "content hash mismatch", blob)
        raise RuntimeEnvSetupError(
            f"The runtime_env package {digest[:12]} in Redis does not match its hash (it "
            "was changed in Redis), so this worker did not unpack it."
        )
    return data


def unpack(data: bytes, target: str) -> None:
    """Unpack a package into the empty directory ``target``: RuntimeEnvSetupError
    for an entry that would land outside it, a link, or a total over the cap."""
    import io

    base = os.path.realpath(target)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise RuntimeEnvSetupError(f"The runtime_env package is not a zip: {exc}") from None
    with zf:
        infos = zf.infolist()
        if sum(i.file_size for i in infos) > MAX_UNPACKED_BYTES:
            raise RuntimeEnvSetupError(_bomb())
        written = 0
        for info in infos:
            name = info.filename
            dest = os.path.realpath(os.path.join(base, name))
            if (
                name.startswith(("/", "\\"))
                or "\\" in name
                or ".." in name.split("/")
                or os.path.commonpath([base, dest]) != base
            ):
                raise RuntimeEnvSetupError(
                    f"The runtime_env package holds the path {name!r}, outside its directory."
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise RuntimeEnvSetupError(f"The runtime_env package holds a link {name!r}.")
            if info.is_dir():
                os.makedirs(dest, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with zf.open(info) as src, open(dest, "wb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    if written > MAX_UNPACKED_BYTES:
                        raise RuntimeEnvSetupError(_bomb())
                    out.write(chunk)
            if (info.external_attr >> 16) & stat.S_IXUSR:
                os.chmod(dest, 0o755)


def _bomb() -> str:
    return (
        "The runtime_env package unpacks to more than "
        f"{MAX_UNPACKED_BYTES} bytes; this worker did not unpack it."
    )


@dataclass
class Entered:
    """What ``enter`` changed, for ``leave``."""

    cwd: str | None = None
    path: list[str] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)


#: what the task running in this process entered (an executor runs one task
#: at a time; an actor enters at its start, for its whole life)
_current: list[Entered] = []


def enter(job_id: str, runtime_env: dict[str, Any] | None) -> None:
    """Fetch the task's packages and step into them (nothing if it names none)."""
    env = runtime_env or {}
    working_dir = env.get("working_dir")
    modules = [m for m in env.get("py_modules") or () if is_uri(m)]
    if not is_uri(working_dir) and not modules:
        return
    dirs = [ensure(job_id, m) for m in modules]
    wd = ensure(job_id, str(working_dir)) if is_uri(working_dir) else None
    entered = Entered(path=list(sys.path), dirs=dirs + ([wd] if wd else []))
    for d in reversed(dirs):
        sys.path.insert(0, d)
    if wd is not None:
        entered.cwd = os.getcwd()
        os.chdir(wd)
        sys.path.insert(0, wd)
    _current.append(entered)


def leave() -> None:
    """Undo ``enter`` once the task ended."""
    if not _current:
        return
    entered = _current.pop()
    if entered.cwd is not None:
        try:
            os.chdir(entered.cwd)
        except OSError:
            os.chdir(tempfile.gettempdir())
    sys.path[:] = entered.path
    roots = tuple(os.path.join(d, "") for d in entered.dirs)
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file.startswith(roots):
            del sys.modules[name]
