"""Signed payloads: nothing reaches ``pickle.loads`` that the cluster did not sign.

With a cluster secret (``REDRAY_SECRET``), every value redray will unpickle
carries an HMAC-SHA256 over its bytes, a *role* (what kind of value it is)
and a *binding* (the id of the key it belongs to), so a signed value cannot
be moved under another key or passed off as another kind of value. Readers
open the envelope before unpickling; anything unsigned or forged raises
``SignatureError`` and is never unpickled.

Envelope: ``b"S1" + tag (32 bytes) + <u16 hint length> + hint + payload``.
The *hint* (covered by the tag) says who to tell when a value fails its
check: a task spec's owner and job, so a task whose spec was forged fails
for its owner instead of hanging it. Without a secret, values are written as
they were (no envelope), and a signed value is refused: this process cannot
check it.

The signing key is derived from the secret and the cluster's prefix, so two
clusters sharing a secret on one server still cannot take each other's values.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import struct
from collections.abc import Callable, Iterable
from typing import Any

MAGIC = b"S1"
TAG_LEN = 32
_HEAD = len(MAGIC) + TAG_LEN + 2
#: parts at least this large are fed to the HMAC as they are, not joined
_STREAM = 64 * 1024
#: a large part is hashed in slices of this size, ``check`` asked before each
_HASH_SLICE = 8 * 1024 * 1024
_LEN = struct.Struct("<Q").pack
_HINT_LEN = struct.Struct("<H").pack
_compare = hmac.compare_digest

#: roles: what a signed value is
SPEC = b"spec"  # a task spec (binding: task id)
CALL = b"call"  # an actor call spec in a mailbox (binding: actor id)
FUNCTION = b"fn"  # a function or class blob (binding: its key)
OBJECT = b"obj"  # an object record, inline or large (binding: object id)
DEATH = b"death"  # a dead actor's death record (binding: actor id)
QUEUE = b"queue"  # a util.queue.Queue item (binding: the queue's key)
PACKAGE = b"pkg"  # a runtime_env working_dir/py_modules zip (binding: its key)


def _small_sha256() -> Callable[..., Any]:
    """CPython's own SHA-256 (``_sha2`` from 3.12, ``_sha256`` before), for
    small values: the same digests as OpenSSL's, from a few kilobytes of code.
    A process signs or checks a value between waits, when the caches are cold,
    and OpenSSL's provider dispatch then costs far more than the hashing: a
    tag over a 300-byte spec measured about 54 us with cold caches through
    OpenSSL, 18 us through this one (about 2 us either way when hot), and
    signing four values a task cost 7-21% of a task's rate. OpenSSL stays for
    large values, which it hashes five times faster (SHA extensions)."""
    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return hashlib.sha256


class SignatureError(ValueError):
    """A value failed its signature check; it was not unpickled."""


class Signer:
    """Seals and opens values for one cluster (secret + prefix)."""

    def __init__(self, secret: str | bytes | None, prefix: str) -> None:
        self._inner: Any = None
        self._outer: Any = None
        self._small: tuple[Any, Any] | None = None
        if secret:
            raw = secret.encode() if isinstance(secret, str) else secret
            key = hmac.new(raw, b"redray-sign-v1|" + prefix.encode(), "sha256").digest()
            # HMAC-SHA256 (RFC 2104) from its two keyed SHA-256 states, copied
            # per tag: the hmac module's own copy() costs more than the hashing
            # of a small spec or record, which every task pays several times
            block = key.ljust(64, b"\0")
            ipad, opad = bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)
            self._inner = hashlib.sha256(ipad)
            self._outer = hashlib.sha256(opad)
            small = _small_sha256()
            self._small = (small(ipad), small(opad))

    @property
    def enabled(self) -> bool:
        return self._inner is not None

    def tag(
        self,
        role: bytes,
        binding: str,
        parts: Iterable[Any],
        check: Callable[[], None] | None = None,
    ) -> bytes:
        """The HMAC of ``parts`` (each length-prefixed) under ``role``/``binding``.
        ``check`` is called before each slice of a large part and raises to
        give the hashing up (an upload whose object was freed meanwhile)."""
        assert self._inner is not None and self._small is not None
        parts = list(parts)
        size = sum(len(p) if type(p) is bytes else memoryview(p).nbytes for p in parts)
        inner_state, outer_state = (self._inner, self._outer) if size >= _STREAM else self._small
        inner = inner_state.copy()
        small: list[bytes] = [role, b"\0", binding.encode(), b"\0"]
        for part in parts:
            if type(part) is not bytes or len(part) >= _STREAM:
                part = memoryview(part).cast("B")
                if part.nbytes >= _STREAM:
                    # a large frame is hashed in place, not copied
                    small.append(_LEN(part.nbytes))
                    inner.update(b"".join(small))
                    small = []
                    for start in range(0, part.nbytes, _HASH_SLICE):
                        if check is not None:
                            check()
                        inner.update(part[start : start + _HASH_SLICE])
                    continue
                part = part.tobytes()
            small.append(_LEN(len(part)))
            small.append(part)
        inner.update(b"".join(small))
        outer = outer_state.copy()
        outer.update(inner.digest())
        return bytes(outer.digest())

    def seal(self, role: bytes, binding: str, payload: bytes, hint: bytes = b"") -> bytes:
        """``payload`` in its envelope (unchanged without a secret)."""
        small = self._small
        if small is None:
            return payload
        head = _HINT_LEN(len(hint)) + hint
        if type(payload) is not bytes or len(payload) >= _STREAM:
            return b"".join((MAGIC, self.tag(role, binding, (head, payload)), head, payload))
        # tag(role, binding, (head, payload)) written out for a small value,
        # nearly every spec, call and record: each task seals two and opens
        # two, between waits, when little of this is in the CPU's caches, so
        # every call and object this path avoids shows in a task's rate
        inner = small[0].copy()
        inner.update(
            b"".join(
                (role, b"\0", binding.encode(), b"\0", _LEN(len(head)), head,
                 _LEN(len(payload)), payload)
            )
        )  # fmt: skip
        outer = small[1].copy()
        outer.update(inner.digest())
        return b"".join((MAGIC, outer.digest(), head, payload))

    def open(self, role: bytes, binding: str, data: bytes | memoryview) -> memoryview:
        """The payload of a sealed value; SignatureError if it fails its check."""
        small = self._small
        if small is not None:
            if type(data) is not bytes and memoryview(data).nbytes < _STREAM:
                data = memoryview(data).tobytes()
            if type(data) is bytes and _HEAD <= len(data) < _STREAM:
                # the small case of seal, checked with plain bytes operations
                # (memoryview comparisons and int.from_bytes over a view cost
                # as much as the hashing); anything wrong is left to the
                # general way below, which says what
                end = _HEAD + (data[_HEAD - 2] | data[_HEAD - 1] << 8)
                if data[:2] == MAGIC and end <= len(data):
                    inner = small[0].copy()
                    inner.update(
                        b"".join(
                            (role, b"\0", binding.encode(), b"\0", _LEN(end - _HEAD + 2),
                             data[_HEAD - 2 : end], _LEN(len(data) - end), data[end:])
                        )
                    )  # fmt: skip
                    outer = small[1].copy()
                    outer.update(inner.digest())
                    if _compare(data[2 : 2 + TAG_LEN], outer.digest()):
                        return memoryview(data)[end:]
        view = memoryview(data).cast("B") if type(data) is not bytes else memoryview(data)
        signed = view[:2] == MAGIC
        if self._inner is None:
            if signed:
                raise SignatureError(
                    "it is signed, and this process has no cluster secret to check it with "
                    "(set REDRAY_SECRET to the cluster's secret)"
                )
            return view
        if not signed:
            raise SignatureError(
                "it is not signed: it was written by someone without the cluster secret"
            )
        end = _payload_start(view)
        # the payload is hashed in place: a large value is not copied
        expected = self.tag(role, binding, (view[_HEAD - 2 : end], view[end:]))
        if not _compare(view[2 : 2 + TAG_LEN], expected):
            raise SignatureError(
                "its signature does not match: it was changed in Redis, or signed with "
                "another secret than this process's REDRAY_SECRET"
            )
        return view[end:]


def hint_of(data: bytes | memoryview) -> bytes:
    """The (unchecked) hint of a sealed value, b"" if it has none: only ever
    used to address an error message, never trusted for anything else."""
    view = memoryview(data).cast("B")
    if bytes(view[: len(MAGIC)]) != MAGIC or len(view) < _HEAD:
        return b""
    try:
        return bytes(view[_HEAD : _payload_start(view)])
    except SignatureError:
        return b""


def _payload_start(sealed: bytes | memoryview) -> int:
    """Where the payload of a sealed value starts (after magic, tag, hint length, hint)."""
    if len(sealed) < _HEAD:
        raise SignatureError("its envelope is truncated")
    end = _HEAD + int.from_bytes(sealed[_HEAD - 2 : _HEAD], "little")
    if len(sealed) < end:
        raise SignatureError("its envelope is truncated")
    return end


def seal_header(
    signer: Signer,
    binding: str,
    header: bytes,
    frames: Iterable[Any],
    check: Callable[[], None] | None = None,
) -> bytes:
    """A large object record's header, signed over itself and every frame
    (the frames are stored in pieces beside it, unchanged); ``check`` as in
    :meth:`Signer.tag`."""
    if not signer.enabled:
        return header
    return MAGIC + signer.tag(OBJECT, binding, [header, *frames], check) + header


def open_header(signer: Signer, header: bytes) -> tuple[bytes, bytes | None]:
    """(header, its tag) of a large record's header field; the tag is checked
    with :func:`check_frames` once the frames are read. SignatureError when
    the header's signedness does not match this process's."""
    signed = header[: len(MAGIC)] == MAGIC
    if not signer.enabled:
        if signed:
            raise SignatureError(
                "it is signed, and this process has no cluster secret to check it with "
                "(set REDRAY_SECRET to the cluster's secret)"
            )
        return header, None
    if not signed or len(header) < len(MAGIC) + TAG_LEN:
        raise SignatureError(
            "it is not signed: it was written by someone without the cluster secret"
        )
    return header[len(MAGIC) + TAG_LEN :], header[len(MAGIC) : len(MAGIC) + TAG_LEN]


def check_frames(
    signer: Signer, binding: str, header: bytes, tag: bytes | None, frames: Iterable[Any]
) -> None:
    if tag is None:
        return
    if not hmac.compare_digest(tag, signer.tag(OBJECT, binding, [header, *frames])):
        raise SignatureError(
            "its signature does not match: it was changed in Redis, or signed with "
            "another secret than this process's REDRAY_SECRET"
        )
