"""put/get: values round-trip, refs inside values, and get's argument checking."""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import psutil
import pytest

import redray


@redray.remote
def echo(x):
    return x


@redray.remote
def digest(data):
    return len(data), hashlib.sha256(data).hexdigest()


@redray.remote
def sum_of_refs(refs):
    return sum(redray.get(list(refs)))


@redray.remote
def make_array(kind):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    if kind == "strided":
        return base[::2, ::3]
    if kind == "transposed":
        return base.T
    return np.array(7.5)


@redray.remote
def array_checksum(arr):
    return arr.shape, arr.dtype.str, float(np.asarray(arr).sum())


SMALL_VALUES = [
    0,
    -(2**70),
    3.25,
    "text ✓",
    b"\x00\x01bytes",
    None,
    True,
    {"a": 1, "nested": {"b": [1, 2, (3, 4)]}},
    [1, "two", 3.0],
    (1, 2),
    {1, 2, 3},
]


@pytest.mark.parametrize("value", SMALL_VALUES, ids=repr)
def test_put_get_round_trips_value(cluster, value):
    back = redray.get(redray.put(value))
    assert back == value
    assert type(back) is type(value)


@pytest.mark.parametrize("value", SMALL_VALUES, ids=repr)
def test_task_returns_its_argument_unchanged(cluster, value):
    back = redray.get(echo.remote(value))
    assert back == value
    assert type(back) is type(value)


def test_put_returns_an_object_ref(cluster):
    assert isinstance(redray.put(1), redray.ObjectRef)


def test_numpy_array_round_trips_through_put(cluster):
    arr = np.arange(1000, dtype=np.int32).reshape(10, 100)
    back = redray.get(redray.put(arr))
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_zero_dimensional_numpy_array_round_trips(cluster):
    arr = np.array(3.5)
    back = redray.get(redray.put(arr))
    assert isinstance(back, np.ndarray)
    assert back.shape == () and back.dtype == arr.dtype
    assert back == arr


def test_non_contiguous_numpy_array_round_trips(cluster):
    base = np.arange(200, dtype=np.float64).reshape(10, 20)
    arr = base[::3, ::2]
    assert not arr.flags.c_contiguous and not arr.flags.f_contiguous
    back = redray.get(redray.put(arr))
    assert back.shape == arr.shape and back.dtype == arr.dtype
    np.testing.assert_array_equal(back, arr)


def test_fortran_ordered_numpy_array_round_trips(cluster):
    arr = np.arange(60, dtype=np.int64).reshape(6, 10).T
    assert arr.flags.f_contiguous and not arr.flags.c_contiguous
    back = redray.get(redray.put(arr))
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("kind", ["strided", "transposed", "scalar"])
def test_numpy_array_returned_by_a_task_round_trips(cluster, kind):
    back = redray.get(make_array.remote(kind))
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    expected = {"strided": base[::2, ::3], "transposed": base.T, "scalar": np.array(7.5)}[kind]
    assert back.shape == expected.shape
    np.testing.assert_array_equal(back, expected)


def test_non_contiguous_numpy_array_passed_to_a_task_arrives_intact(cluster):
    arr = np.arange(200, dtype=np.float64).reshape(10, 20)[1::3, ::4]
    shape, dtype, total = redray.get(array_checksum.remote(arr))
    assert tuple(shape) == arr.shape
    assert dtype == arr.dtype.str
    assert total == float(arr.sum())


def test_large_bytes_round_trip_through_put(cluster):
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    back = redray.get(redray.put(data))
    assert len(back) == len(data)
    assert back == data


def test_large_bytes_passed_to_a_task_arrive_intact(cluster):
    data = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    assert redray.get(digest.remote(data)) == (len(data), hashlib.sha256(data).hexdigest())


def test_large_put_ref_passed_to_a_task_arrives_intact(cluster):
    data = b"\xab" * (5 * 1024 * 1024)
    ref = redray.put(data)
    assert redray.get(digest.remote(ref)) == (len(data), hashlib.sha256(data).hexdigest())


def test_large_bytes_returned_by_a_task_round_trip(cluster):
    data = b"\x5a" * (5 * 1024 * 1024)
    assert redray.get(echo.remote(data)) == data


def test_put_of_an_object_ref_is_type_error(cluster):
    ref = redray.put(1)
    with pytest.raises(TypeError):
        redray.put(ref)


def test_put_of_a_list_of_refs_keeps_them_as_refs(cluster):
    inner = [redray.put(1), redray.put(2)]
    outer = redray.get(redray.put(inner))
    assert isinstance(outer, list) and len(outer) == 2
    assert all(isinstance(r, redray.ObjectRef) for r in outer)
    assert redray.get(outer) == [1, 2]


def test_put_list_of_refs_passed_to_a_task_can_be_resolved_there(cluster):
    inner = [redray.put(10), echo.remote(20)]
    assert redray.get(sum_of_refs.remote(redray.put(inner))) == 30


def test_get_of_a_list_returns_the_values_in_order(cluster):
    refs = [redray.put(i) for i in range(5)]
    assert redray.get(refs) == [0, 1, 2, 3, 4]


def test_get_of_a_list_with_a_repeated_ref_returns_it_each_time(cluster):
    a, b = redray.put("a"), redray.put("b")
    assert redray.get([a, b, a]) == ["a", "b", "a"]


def test_get_of_an_empty_list_is_an_empty_list(cluster):
    assert redray.get([]) == []


def test_get_of_a_non_ref_is_value_error(cluster):
    with pytest.raises(ValueError):
        redray.get("notaref")


def test_get_of_a_tuple_of_refs_is_value_error(cluster):
    # Ray accepts only an ObjectRef or a list of them
    with pytest.raises(ValueError):
        redray.get((redray.put(1), redray.put(2)))


def test_get_of_a_list_holding_a_non_ref_is_type_error(cluster):
    # Ray: "Attempting to call `get` on the value 1, which is not an ray.ObjectRef."
    with pytest.raises(TypeError):
        redray.get([redray.put(1), 1])


def test_get_returns_an_equal_value_each_time(cluster):
    ref = redray.put({"k": [1, 2]})
    assert redray.get(ref) == redray.get(ref) == {"k": [1, 2]}


# -- what a task spec carries ----------------------------------------------------------------


@redray.remote(resources={"nowhere": 1})
def never_runs(*args):
    return args


def _spec_of(ref):
    from redray import task_spec as ts

    rt = redray.api.current_runtime()
    rt.flush()
    return ts.decode(rt.client.hget(rt.keys.task_spec, ref.task_id().hex()))


def test_small_arguments_travel_inline_in_the_task_spec(cluster):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no node offers 'nowhere': it stays pending
        ref = never_runs.remote(b"s" * 5000, 7)
    spec = _spec_of(ref)
    assert spec.deps == () and len(spec.args) > 5000
    redray.cancel(ref)


def test_large_arguments_are_stored_as_objects_of_their_own(cluster):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = never_runs.remote(b"L" * 1_000_000, b"s" * 100)
    spec = _spec_of(ref)
    assert len(spec.deps) == 1 and len(spec.args) < 10_000
    redray.cancel(ref)


class _CountsLoads:
    """Appends a line to ``path`` each time it is unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_loaded, (self.path,))


def _loaded(path: str) -> _CountsLoads:
    with open(path, "a") as f:
        f.write("load\n")
    return _CountsLoads(path)


def test_functions_are_unpickled_once_per_executor_not_per_call(cluster, tmp_path):
    loads = tmp_path / "loads"
    marker = _CountsLoads(str(loads))

    @redray.remote
    def uses_marker(i: int) -> int:
        assert marker.path
        return i

    assert redray.get([uses_marker.remote(i) for i in range(40)], timeout=60) == list(range(40))
    executors = len(psutil.Process(cluster.process.pid).children())
    assert 1 <= loads.read_text().count("load") <= executors
