"""The node's copies of runtime_env packages, and entering them for a task.

A package (``redray://<sha256>``, see redray/runtime_env.py) is fetched once
per node into ``<tmp>/redray-packages/<prefix>-<node id>/<sha256>``: under a
lock file, the blob is read from Redis, its signature and its SHA-256 are
checked (a forged or changed zip is refused, never unpacked), it is unpacked
into a fresh temporary directory with every entry checked (no path escaping
it, no links, the total size capped) and renamed into place, so concurrent
executors on the node see either nothing or the whole package. The node
agent removes its directory when it stops.

While a task or actor runs in a package it holds a shared ``flock`` on the
package's ``.<sha256>.use`` file (and touches it). Past ``CACHE_BYTES`` of
unpacked packages, the executor that unpacked one removes the least recently
used packages it can lock exclusively, so no package in use is ever removed
and the node's disk use stays bounded while it runs. The ``.use`` files stay
(empty): removing a lock file while another process has it open would let two
processes each believe they hold "the" lock.

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
from typing import IO, Any

from redray import constants, dead_letters, session
from redray.exceptions import RuntimeEnvSetupError
from redray.runtime_env import digest_of, is_uri
from redray.signing import PACKAGE, SignatureError

#: bytes of a package once unpacked, at most (a zip bomb is refused past it)
MAX_UNPACKED_BYTES = 2 * constants.MAX_PACKAGE_BYTES
_CHUNK = 1024 * 1024
#: bytes of unpacked packages a node keeps before removing unused ones
#: (Ray's default for its working_dir cache is 10 GB too)
CACHE_BYTES = 10 * 1024**3


def node_dir(prefix: str, node_id: str) -> str:
    """Where the node keeps its unpacked packages."""
    return os.path.join(tempfile.gettempdir(), "redray-packages", f"{prefix}-{node_id}")


def remove_node_dir(prefix: str, node_id: str) -> None:
    """The node agent stops: its packages go."""
    shutil.rmtree(node_dir(prefix, node_id), ignore_errors=True)


def ensure(job_id: str, uri: str) -> tuple[str, IO[str]]:
    """The unpacked directory of the package ``uri`` on this node, fetched
    first if this node has none, and the open ``.use`` file that keeps it
    from being removed until closed; RuntimeEnvSetupError if it cannot be had."""
    runtime = session.current_runtime()
    try:
        digest = digest_of(uri)
    except ValueError as exc:
        raise RuntimeEnvSetupError(str(exc)) from None
    root = node_dir(runtime.keys.prefix, runtime.identity.node_id or "driver")
    target = os.path.join(root, digest)
    os.makedirs(root, exist_ok=True)
    # in use before looking: an eviction under way finishes first, or waits for us
    use = _hold(root, digest)
    try:
        if not os.path.isdir(target):
            _unpack_once(runtime, job_id, root, digest, target)
            evict(root, CACHE_BYTES)
    except BaseException:
        use.close()
        raise
    return target, use


def _hold(root: str, digest: str) -> IO[str]:
    use = open(os.path.join(root, f".{digest}.use"), "a")  # noqa: SIM115 - held while in use
    fcntl.flock(use, fcntl.LOCK_SH)
    os.utime(use.fileno())  # the least recently used go first
    return use


def _unpack_once(runtime: Any, job_id: str, root: str, digest: str, target: str) -> None:
    with open(os.path.join(root, f".{digest}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.isdir(target):
            return  # another executor unpacked it while this one waited
        data = _fetch(runtime, job_id, digest)
        scratch = tempfile.mkdtemp(prefix=f".{digest}.", dir=root)
        try:
            unpack(data, scratch)
            os.rename(scratch, target)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise


def evict(root: str, limit: int) -> list[str]:
    """Remove the least recently used packages under ``root`` that nobody
    holds, until what is left is at most ``limit`` bytes; the digests removed."""
    sizes = {d: _size(os.path.join(root, d)) for d in os.listdir(root) if not d.startswith(".")}
    total = sum(sizes.values())
    removed: list[str] = []
    for digest in sorted(sizes, key=lambda d: _last_used(root, d)):
        if total <= limit:
            break
        with open(os.path.join(root, f".{digest}.use"), "a") as use:
            try:
                fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a task or actor runs in it
            doomed = tempfile.mkdtemp(prefix=f".{digest}.gone.", dir=root)
            os.rename(os.path.join(root, digest), os.path.join(doomed, digest))
        shutil.rmtree(doomed, ignore_errors=True)
        total -= sizes[digest]
        removed.append(digest)
    return removed


def _last_used(root: str, digest: str) -> float:
    try:
        return os.stat(os.path.join(root, f".{digest}.use")).st_mtime
    except FileNotFoundError:
        return 0.0


def _size(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


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
    #: the packages' ``.use`` files, held until the task ends
    holds: list[IO[str]] = field(default_factory=list)


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
    held: list[tuple[str, IO[str]]] = []
    try:
        for uri in modules + ([str(working_dir)] if is_uri(working_dir) else []):
            held.append(ensure(job_id, uri))
    except BaseException:
        for _, use in held:
            use.close()
        raise
    dirs = [d for d, _ in held[: len(modules)]]
    wd = held[-1][0] if is_uri(working_dir) else None
    entered = Entered(path=list(sys.path), dirs=[d for d, _ in held], holds=[u for _, u in held])
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
    for use in entered.holds:
        use.close()  # its package may be evicted from now on
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
