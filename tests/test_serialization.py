"""Frames, pack/unpack, object records and task specs (pure logic, no server)."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import redray.serialization as ser
import redray.task_spec as ts
from redray.serialization import (
    KIND_ERROR,
    KIND_VALUE,
    CloudpickleSerializer,
    decode_record,
    encode_record,
    frames_size,
    pack,
    record_is_small,
    unpack,
)
from redray.task_spec import TaskSpec

frame_lists = st.lists(st.binary(max_size=300), max_size=12)


def as_stored(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """What HGETALL gives back for the fields ``encode_record`` wrote."""
    return {name.encode(): bytes(value) for name, value in fields.items()}


def as_bytes(frames: list[Any]) -> list[bytes]:
    return [bytes(f) for f in frames]


# -- pack / unpack -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(frame_lists)
def test_pack_unpack_round_trip(frames: list[bytes]) -> None:
    packed = pack(frames)
    assert isinstance(packed, bytes)
    assert len(packed) == 4 + 8 * len(frames) + sum(map(len, frames))
    assert as_bytes(unpack(packed)) == frames


@settings(max_examples=100, deadline=None)
@given(frame_lists)
def test_pack_accepts_any_buffer_kind(frames: list[bytes]) -> None:
    mixed: list[Any] = []
    for i, f in enumerate(frames):
        mixed.append([f, bytearray(f), memoryview(f)][i % 3])
    assert pack(mixed) == pack(frames)
    assert as_bytes(unpack(bytearray(pack(mixed)))) == frames


def test_unpack_returns_zero_copy_views() -> None:
    packed = pack([b"abc", b"", b"defg"])
    frames = unpack(packed)
    assert all(isinstance(f, memoryview) for f in frames)
    assert all(f.obj is packed for f in frames)
    assert as_bytes(frames) == [b"abc", b"", b"defg"]


def test_pack_of_no_frames() -> None:
    assert unpack(pack([])) == []


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_unpack_of_random_bytes_raises_only_value_error(data: bytes) -> None:
    try:
        frames = unpack(data)
    except ValueError:
        return
    # if it parsed, it is exactly a packing of what it returned
    assert pack(frames) == data


@settings(max_examples=200, deadline=None)
@given(frame_lists, st.data())
def test_unpack_of_damaged_packing_raises_only_value_error(
    frames: list[bytes], data: st.DataObject
) -> None:
    packed = bytearray(pack(frames))
    how = data.draw(st.sampled_from(["truncate", "extend", "flip"]))
    if how == "truncate":
        if not packed:
            return
        packed = packed[: data.draw(st.integers(0, len(packed) - 1))]
    elif how == "extend":
        packed += data.draw(st.binary(min_size=1, max_size=16))
    else:
        i = data.draw(st.integers(0, len(packed) - 1))
        packed[i] ^= data.draw(st.integers(1, 255))
    try:
        got = unpack(bytes(packed))
    except ValueError:
        return
    assert pack(got) == bytes(packed)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01\x00\x00",
        struct.pack("<I", 2_000_000),  # absurd frame count
        struct.pack("<I", 1),  # count without lengths
        struct.pack("<IQ", 1, 10) + b"short",  # frame longer than the data
        struct.pack("<IQ", 1, 2) + b"abc",  # trailing byte
        struct.pack("<IQ", 1, 2**64 - 1) + b"x",
    ],
)
def test_unpack_rejects_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        unpack(data)


# -- records -------------------------------------------------------------------------------


def test_small_record_is_one_field() -> None:
    frames = [b"head", b"buf"]
    fields = encode_record(KIND_VALUE, frames)
    assert record_is_small(fields)
    assert list(fields) == ["d"]
    assert bytes(fields["d"]) == b"v" + pack(frames)
    kind, back = decode_record(as_stored(fields))
    assert kind == KIND_VALUE and as_bytes(back) == frames


def test_record_at_inline_limit_is_small_and_above_is_large(monkeypatch) -> None:
    monkeypatch.setattr(ser, "INLINE_LIMIT", 10)
    assert record_is_small(encode_record(KIND_VALUE, [b"12345", b"67890"]))
    large = encode_record(KIND_VALUE, [b"12345", b"678901"])
    assert not record_is_small(large)
    kind, back = decode_record(as_stored(large))
    assert kind == KIND_VALUE and as_bytes(back) == [b"12345", b"678901"]


def test_large_record_multi_piece_layout(monkeypatch) -> None:
    monkeypatch.setattr(ser, "INLINE_LIMIT", 16)
    monkeypatch.setattr(ser, "PIECE_LIMIT", 10)
    frames = [b"a" * 25, b"", b"b" * 10, b"c" * 3]
    fields = encode_record(KIND_ERROR, frames)
    assert not record_is_small(fields)
    # 25 bytes -> 3 pieces, empty -> 1 empty piece, 10 -> 1, 3 -> 1
    assert sorted(fields) == ["0", "1", "2", "3", "4", "5", "h"]
    assert bytes(fields["h"]) == b"e" + struct.pack("<I4I", 4, 3, 1, 1, 1)
    pieces = [bytes(fields[str(i)]) for i in range(6)]
    assert pieces == [b"a" * 10, b"a" * 10, b"a" * 5, b"", b"b" * 10, b"c" * 3]
    assert all(len(p) <= 10 for p in pieces)
    kind, back = decode_record(as_stored(fields))
    assert kind == KIND_ERROR and as_bytes(back) == frames


@settings(max_examples=200, deadline=None)
@given(
    frame_lists, st.integers(1, 64), st.integers(0, 200), st.sampled_from([KIND_VALUE, KIND_ERROR])
)
def test_record_round_trip_any_limits(
    frames: list[bytes], piece_limit: int, inline_limit: int, kind: bytes
) -> None:
    saved = ser.PIECE_LIMIT, ser.INLINE_LIMIT
    ser.PIECE_LIMIT, ser.INLINE_LIMIT = piece_limit, inline_limit
    try:
        fields = encode_record(kind, frames)
    finally:
        ser.PIECE_LIMIT, ser.INLINE_LIMIT = saved
    assert record_is_small(fields) == (frames_size(frames) <= inline_limit)
    if not record_is_small(fields):
        assert all(len(memoryview(v)) <= piece_limit for k, v in fields.items() if k != "h")
    got_kind, back = decode_record(as_stored(fields))
    assert got_kind == kind and as_bytes(back) == frames


def test_large_record_pieces_are_views_of_the_frames(monkeypatch) -> None:
    monkeypatch.setattr(ser, "INLINE_LIMIT", 100)
    monkeypatch.setattr(ser, "PIECE_LIMIT", 1000)
    array = np.arange(500, dtype=np.float64)  # 4000 bytes -> 4 pieces
    frames = CloudpickleSerializer().dumps(array)
    fields = encode_record(KIND_VALUE, frames)
    pieces = [fields[str(i)] for i in range(1, 5)]  # piece 0 is the pickle stream
    assert all(isinstance(p, memoryview) for p in pieces)
    assert all(np.shares_memory(np.frombuffer(p, dtype=np.uint8), array) for p in pieces)
    _, back = decode_record(as_stored(fields))
    np.testing.assert_array_equal(CloudpickleSerializer().loads(back), array)


def test_decode_record_rejects_empty_or_fieldless_record() -> None:
    with pytest.raises(ValueError):
        decode_record({b"d": b""})
    with pytest.raises(ValueError):
        decode_record({})
    with pytest.raises(ValueError):
        decode_record({b"h": b"v"})  # header too short for a frame count
    with pytest.raises(ValueError):
        decode_record({b"d": b"v" + b"\x05"})  # small record with a broken packing


@pytest.mark.parametrize(
    "record",
    [
        # frame count says 5, but no layout follows
        {b"h": b"v" + struct.pack("<I", 5)},
        # absurd frame count
        {b"h": b"v" + struct.pack("<I", 0xFFFFFFFF)},
        # layout cut in the middle of a piece count
        {b"h": b"v" + struct.pack("<II", 2, 1) + b"\x01", b"0": b"a"},
    ],
)
def test_decode_record_rejects_corrupt_header_with_value_error(record: dict[bytes, bytes]) -> None:
    # Runtime.fetch turns (ValueError, KeyError) into RaySystemError "corrupt record";
    # anything else escapes to the user as a raw internal error.
    with pytest.raises(ValueError):
        decode_record(record)


def test_decode_record_missing_piece_is_reported() -> None:
    record = {b"h": b"v" + struct.pack("<II", 1, 2), b"0": b"a"}  # piece 1 missing
    with pytest.raises((ValueError, KeyError)):
        decode_record(record)


# -- the cloudpickle serializer --------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [None, 1, "text", b"bytes", {"a": [1, 2.5, (3,)]}, ValueError("boom"), lambda x: x + 1],
    ids=["none", "int", "str", "bytes", "nested", "exception", "lambda"],
)
def test_serializer_round_trip(value: Any) -> None:
    s = CloudpickleSerializer()
    back = s.loads(s.dumps(value))
    if callable(value) and not isinstance(value, BaseException):
        assert back(1) == 2
    elif isinstance(value, BaseException):
        assert type(back) is type(value) and back.args == value.args
    else:
        assert back == value


def test_numpy_array_frames_hold_the_array_buffer() -> None:
    array = np.arange(1000, dtype=np.float64)
    frames = CloudpickleSerializer().dumps(array)
    assert len(frames) == 2  # pickle stream + one out-of-band buffer
    buf = frames[1]
    assert isinstance(buf, memoryview)
    assert memoryview(buf).nbytes == array.nbytes
    assert np.shares_memory(np.frombuffer(buf, dtype=array.dtype), array)
    # the pickle stream itself does not carry the data
    assert len(frames[0]) < array.nbytes // 10
    # a change to the array shows through the frame: no copy was made
    array[0] = 42.0
    assert np.frombuffer(buf, dtype=array.dtype)[0] == 42.0


def test_fortran_order_array_is_out_of_band_and_round_trips() -> None:
    array = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    s = CloudpickleSerializer()
    frames = s.dumps(array)
    assert len(frames) == 2
    assert np.shares_memory(np.frombuffer(frames[1], dtype=array.dtype), array)
    back = s.loads(frames)
    np.testing.assert_array_equal(back, array)


def test_array_through_pack_unpack_and_record(monkeypatch) -> None:
    s = CloudpickleSerializer()
    array = np.random.default_rng(0).random((64, 32))
    frames = s.dumps({"x": array, "y": [array[0]]})
    back = s.loads(unpack(pack(frames)))
    np.testing.assert_array_equal(back["x"], array)
    np.testing.assert_array_equal(back["y"][0], array[0])
    monkeypatch.setattr(ser, "INLINE_LIMIT", 1024)
    monkeypatch.setattr(ser, "PIECE_LIMIT", 4096)
    _, rec_frames = decode_record(as_stored(encode_record(KIND_VALUE, frames)))
    np.testing.assert_array_equal(s.loads(rec_frames)["x"], array)


def test_frames_size_counts_bytes_of_any_buffer() -> None:
    array = np.zeros(10, dtype=np.int64)
    assert frames_size([b"ab", bytearray(3), memoryview(array)]) == 2 + 3 + 80


# -- task specs ------------------------------------------------------------------------------

text = st.text(max_size=20)
specs = st.builds(
    TaskSpec,
    task_id=text,
    job_id=text,
    function_key=text,
    function_digest=text,
    function_name=text,
    args=st.binary(max_size=100),
    deps=st.lists(text, max_size=4).map(tuple),
    num_returns=st.integers(0, 100),
    owner=text,
    max_retries=st.integers(-1, 10),
    retry_exceptions=st.sampled_from([False, True, (ValueError, KeyError)]),
    extra=st.none() | st.dictionaries(text, st.integers() | text, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_task_spec_round_trip(spec: TaskSpec) -> None:
    data = ts.encode(spec)
    assert isinstance(data, bytes)
    back = ts.decode(data)
    assert back == spec and isinstance(back, TaskSpec)


def test_task_spec_default_extra_and_dep_arg() -> None:
    spec = TaskSpec("t", "j", "k", "d", "m.f", pack([b"x"]), ("o1",), 1, "w", 3, False)
    assert spec.extra is None
    assert ts.decode(ts.encode(spec)) == spec
    dep = pickle.loads(pickle.dumps(ts.DepArg(7), protocol=5))
    assert isinstance(dep, ts.DepArg) and dep.index == 7


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        pickle.dumps(5),
        pickle.dumps((1, 2, 3)),
        pickle.dumps((ts.SPEC_VERSION, "not a tuple")),
        pickle.dumps((ts.SPEC_VERSION + 1, ("t",) * 12)),
        pickle.dumps((ts.SPEC_VERSION, ("too", "few"))),
        pickle.dumps((ts.SPEC_VERSION, ("x",) * 20)),
        pickle.dumps({"a": 1}),
        pickle.dumps((ts.SPEC_VERSION, ("t",) * 12))[:-3],
    ],
)
def test_task_spec_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ValueError):
        ts.decode(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_task_spec_decode_of_random_bytes_raises_only_value_error(data: bytes) -> None:
    try:
        ts.decode(data)
    except ValueError:
        pass


@settings(max_examples=200, deadline=None)
@given(specs, st.data())
def test_task_spec_decode_of_damaged_spec_raises_only_value_error(
    spec: TaskSpec, data: st.DataObject
) -> None:
    raw = bytearray(ts.encode(spec))
    i = data.draw(st.integers(0, len(raw) - 1))
    if data.draw(st.booleans()):
        raw[i] ^= data.draw(st.integers(1, 255))
    else:
        del raw[i:]
    try:
        ts.decode(bytes(raw))
    except ValueError:
        pass


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.tuples(st.integers()),
    st.tuples(st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["streaming", "dynamic"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(field_values, max_size=15))
def test_task_spec_with_any_field_types_decodes_only_to_what_a_worker_can_read(
    fields: list[Any],
) -> None:
    try:
        spec = ts.decode(pickle.dumps((ts.SPEC_VERSION, tuple(fields))))
    except ValueError:
        return
    assert all(isinstance(getattr(spec, f), str) for f in ("task_id", "owner", "function_name"))
    assert isinstance(spec.args, bytes) and isinstance(spec.deps, tuple)
    assert spec.extra is None or isinstance(spec.extra, dict)
    assert ts.result_indexes(spec) is not None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("task_id", 5),
        ("deps", ["o1"]),
        ("num_returns", -1),
        ("num_returns", "many"),
        ("max_retries", "3"),
        ("extra", 7),
        ("args", "text"),
    ],
)
def test_task_spec_decode_names_the_field_of_the_wrong_type(field: str, value: Any) -> None:
    good = TaskSpec("t", "j", "k", "d", "m.f", pack([b"x"]), ("o1",), 1, "w", 3, False)
    with pytest.raises(ValueError, match=field):
        ts.decode(ts.encode(good._replace(**{field: value})))
