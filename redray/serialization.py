"""Turning Python values into Redis values and back.

A serializer (``dumps``/``loads``) turns a value into *frames*: one pickle
stream plus the out-of-band buffers of pickle protocol 5, so a numpy array's
memory is written to the socket without being copied into the pickle. A
*record* is how an object's frames are laid out in its Redis hash:

* small objects: one field ``d`` = kind byte + packed frames;
* large objects: field ``h`` = kind byte + layout, and fields ``0``, ``1``, ...
  each holding one piece of at most ``PIECE_LIMIT`` bytes (Redis refuses values
  over 512 MB), so any size can be stored.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import cloudpickle

from .constants import INLINE_LIMIT, PIECE_LIMIT
from .signing import OBJECT, Signer, check_frames, open_header, seal_header

Frame = bytes | bytearray | memoryview

KIND_VALUE = b"v"
KIND_ERROR = b"e"


class Serializer(Protocol):
    """What a client needs to move values: frames out, value back."""

    def dumps(self, value: Any) -> list[Frame]: ...

    def loads(self, frames: Sequence[Frame]) -> Any: ...


class CloudpickleSerializer:
    """cloudpickle with protocol 5 out-of-band buffers (the default)."""

    def dumps(self, value: Any) -> list[Frame]:
        if _plain(value):
            # the C pickler, for values that pickle the same either way: several
            # times faster than cloudpickle's Python-level pickler
            return [pickle.dumps(value, protocol=5)]
        buffers: list[pickle.PickleBuffer] = []
        head = cloudpickle.dumps(value, protocol=5, buffer_callback=buffers.append)
        frames: list[Frame] = [head]
        for buf in buffers:
            raw = buf.raw()
            frames.append(raw if raw.contiguous else raw.tobytes())
        return frames

    def loads(self, frames: Sequence[Frame]) -> Any:
        return pickle.loads(frames[0], buffers=frames[1:])


_SCALARS = (type(None), bool, int, float, str, bytes)


def _plain(value: Any, depth: int = 0) -> bool:
    """A scalar, or a small list/tuple/dict of plain values (no functions,
    classes or buffers that only cloudpickle or protocol 5 buffers handle)."""
    kind = type(value)
    if kind in _SCALARS:
        return kind is not bytes or len(value) < 65536
    if depth > 2 or kind not in (list, tuple, dict):
        return False
    if len(value) > 16:
        return False
    if kind is dict:
        return all(_plain(k, depth + 1) and _plain(v, depth + 1) for k, v in value.items())
    return all(_plain(v, depth + 1) for v in value)


def frames_size(frames: Sequence[Frame]) -> int:
    return sum(memoryview(f).nbytes for f in frames)


def pack(frames: Sequence[Frame]) -> bytes:
    """Frames as one byte string: count, lengths, then the frames."""
    lengths = [memoryview(f).nbytes for f in frames]
    header = struct.pack(f"<I{len(lengths)}Q", len(lengths), *lengths)
    return b"".join([header, *frames])


def unpack(data: Frame) -> list[memoryview]:
    """The frames of :func:`pack`'s output, as zero-copy views."""
    view = memoryview(data)
    if len(view) < 4:
        raise ValueError("truncated frame header")
    (count,) = struct.unpack_from("<I", view, 0)
    offset = 4 + 8 * count
    if count > 1_000_000 or len(view) < offset:
        raise ValueError("corrupt frame header")
    lengths = struct.unpack_from(f"<{count}Q", view, 4)
    frames = []
    for length in lengths:
        end = offset + length
        if end > len(view):
            raise ValueError("truncated frame")
        frames.append(view[offset:end])
        offset = end
    if offset != len(view):
        raise ValueError("trailing bytes after frames")
    return frames


def encode_record(
    kind: bytes,
    frames: Sequence[Frame],
    signer: Signer | None = None,
    oid: str = "",
    check: Callable[[], None] | None = None,
) -> dict[str, Frame]:
    """The hash fields that store object ``oid``, signed by ``signer`` (when
    it has a secret) for that object: a small record's ``d`` is sealed whole;
    a large record's header ``h`` carries the tag over itself and every frame
    (``check`` is called between slices of that hashing and raises to give
    it up)."""
    if frames_size(frames) <= INLINE_LIMIT:
        small = kind + pack(frames)
        return {"d": signer.seal(OBJECT, oid, small) if signer is not None else small}
    fields: dict[str, Frame] = {}
    pieces_per_frame = []
    index = 0
    for frame in frames:
        view = memoryview(frame).cast("B")
        count = 0
        for start in range(0, max(len(view), 1), PIECE_LIMIT):
            fields[str(index)] = view[start : start + PIECE_LIMIT]
            index += 1
            count += 1
        pieces_per_frame.append(count)
    header = kind + struct.pack(
        f"<I{len(pieces_per_frame)}I", len(pieces_per_frame), *pieces_per_frame
    )
    fields["h"] = seal_header(signer, oid, header, frames, check) if signer is not None else header
    return fields


def decode_small(
    data: bytes | memoryview, signer: Signer | None = None, oid: str = ""
) -> tuple[bytes, list[Frame]]:
    """(kind, frames) of a small record's ``d`` (or of a notice's inline
    value), checked by ``signer``: SignatureError if it fails."""
    view = signer.open(OBJECT, oid, data) if signer is not None else memoryview(data)
    if not len(view):
        raise ValueError("empty object record")
    return bytes(view[:1]), list(unpack(view[1:]))


def decode_record(
    record: dict[bytes, bytes], signer: Signer | None = None, oid: str = ""
) -> tuple[bytes, list[Frame]]:
    """(kind, frames) from the hash fields :func:`encode_record` wrote;
    SignatureError (a ValueError) if ``signer`` finds it unsigned or forged."""
    small = record.get(b"d")
    if small is not None:
        return decode_small(small, signer, oid)
    header = record.get(b"h")
    tag = None
    if header is not None and signer is not None:
        header, tag = open_header(signer, bytes(header))
    if header is None or len(header) < 5:
        raise ValueError("object record has neither 'd' nor 'h' field")
    kind = header[:1]
    (count,) = struct.unpack_from("<I", header, 1)
    if len(header) != 5 + 4 * count:
        raise ValueError(f"object header announces {count} frames but has {len(header)} bytes")
    layout = struct.unpack_from(f"<{count}I", header, 5)
    frames: list[Frame] = []
    index = 0
    for pieces in layout:
        try:
            parts = [record[str(index + i).encode()] for i in range(pieces)]
        except KeyError as exc:
            raise ValueError(f"object record lacks piece {exc.args[0]!r}") from None
        index += pieces
        frames.append(parts[0] if len(parts) == 1 else b"".join(parts))
    if signer is not None:
        check_frames(signer, oid, header, tag, frames)
    return kind, frames


def record_is_small(fields: dict[str, Frame]) -> bool:
    return "d" in fields


def error_frames(serializer: Serializer, error: BaseException) -> list[Frame]:
    """An exception's frames; one that cannot be pickled becomes a
    ``RayError`` saying so (a ``RayTaskError`` keeps its traceback)."""
    from .exceptions import RayError, RaySystemError, RayTaskError

    try:
        return serializer.dumps(error)
    except Exception:  # noqa: BLE001 - fall back to a picklable description
        fallback: RayError
        if isinstance(error, RayTaskError):
            cause = RayError(
                f"The original cause of the RayTaskError ({type(error.cause)}) isn't "
                f"serializable: {error.cause!r}. Overwriting the cause to a RayError."
            )
            fallback = RayTaskError(error.function_name, error.traceback_str, cause)
        else:
            fallback = RaySystemError(repr(error))
        return serializer.dumps(fallback)
