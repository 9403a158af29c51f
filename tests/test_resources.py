"""Resource units, validation, shapes and GPU detection (pure logic)."""

from __future__ import annotations

import math
import subprocess
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import redray.resources as res
from redray.resources import (
    detect_gpus,
    fits_totals,
    from_units,
    missing_resources,
    node_info,
    node_totals,
    parse_reservation,
    parse_shape,
    request,
    shape_of,
    to_units,
    units_of,
    validate_name,
)

names = st.text(
    alphabet=st.characters(codec="ascii", exclude_characters=",=|;: \t\n{}\r\x0b\x0c"),
    min_size=1,
    max_size=12,
)
unit_maps = st.dictionaries(names, st.integers(0, 10**12), max_size=6)


# -- to_units -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantity", "units"),
    [
        (0, 0),
        (1, 10_000),
        (3, 30_000),
        (0.5, 5_000),
        (0.1, 1_000),
        (0.3, 3_000),  # 0.3 * 1e4 is 3000.0000000000005 in floats
        (1 / 3, 3_333),
        (2 / 3, 6_667),
        (0.0001, 1),
        (0.00016, 2),
        (1.23456789, 12_346),
        (2.0, 20_000),
    ],
)
def test_to_units_rounds_to_one_ten_thousandth(quantity: float, units: int) -> None:
    got = to_units("CPU", quantity)
    assert got == units and isinstance(got, int)


def test_quantity_below_the_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision"):
        to_units("GPU", 0.00004)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_to_units_is_nearest_unit(quantity: float) -> None:
    if 0 < quantity < 0.00005:
        with pytest.raises(ValueError, match="precision"):
            to_units("custom", quantity)
        return
    units = to_units("custom", quantity)
    assert isinstance(units, int)
    assert abs(units - quantity * 10_000) <= 0.5 + 1e-6 * max(1.0, quantity * 10_000)


@pytest.mark.parametrize(
    "quantity", [-1, -0.0001, math.nan, math.inf, -math.inf, True, False, "1", None, [1], 1j]
)
def test_to_units_rejects_bad_quantity_naming_resource(quantity: object) -> None:
    with pytest.raises(ValueError, match="my_resource"):
        to_units("my_resource", quantity)


def test_fractional_gpu_above_one_rejected() -> None:
    with pytest.raises(ValueError, match="GPU|gpu"):
        to_units("GPU", 1.5)
    with pytest.raises(ValueError):
        to_units("GPU", 2.25)
    assert to_units("GPU", 0.25) == 2_500
    assert to_units("GPU", 1.0) == 10_000
    assert to_units("GPU", 4) == 40_000
    # other resources may be fractional above one
    assert to_units("CPU", 1.5) == 15_000
    assert to_units("accel", 2.5) == 25_000


@pytest.mark.parametrize(
    ("units", "value"), [(0, 0.0), (10_000, 1.0), (5_000, 0.5), (3_333, 0.3333)]
)
def test_from_units(units: int, value: float) -> None:
    assert from_units(units) == value


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**12))
def test_from_units_to_units_round_trip(units: int) -> None:
    assert to_units("CPU", from_units(units)) == units


# -- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "a,b", "a=b", "a|b", "a;b", "a:b", "a b", "a\tb", "{x}", 5, None]
)
def test_validate_name_rejects(name: object) -> None:
    with pytest.raises(ValueError):
        validate_name(name)


@pytest.mark.parametrize("name", ["accel", "TPU-v4", "node_ip.10.0.0.1", "memory", "x"])
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == name


# -- request ---------------------------------------------------------------------------------


def test_request_defaults_to_one_cpu() -> None:
    assert request(None, None, None, None) == {"CPU": 10_000}
    assert request(None, None, None, None, default_cpus=0) == {}


def test_request_combines_and_drops_zero_entries() -> None:
    got = request(2, 0.5, 1024, {"accel": 1, "zero": 0})
    assert got == {"CPU": 20_000, "GPU": 5_000, "memory": 10_240_000, "accel": 10_000}
    assert request(0, 0, None, None) == {}


@pytest.mark.parametrize("name", ["CPU", "GPU"])
def test_request_rejects_cpu_gpu_in_resources(name: str) -> None:
    with pytest.raises(ValueError, match="num_cpus|num_gpus"):
        request(None, None, None, {name: 1})


def test_request_validates_names_and_quantities() -> None:
    with pytest.raises(ValueError):
        request(None, None, None, {"a,b": 1})
    with pytest.raises(ValueError, match="accel"):
        request(None, None, None, {"accel": -1})
    with pytest.raises(ValueError, match="CPU"):
        request(-1, None, None, None)
    with pytest.raises(ValueError):
        request(None, 1.5, None, None)
    with pytest.raises(ValueError, match="memory"):
        request(None, None, "1GB", None)


# -- shapes ----------------------------------------------------------------------------------


def test_shape_is_canonical() -> None:
    a = shape_of({"b": 1, "CPU": 10_000, "a": 2, "GPU": 5_000})
    b = shape_of({"GPU": 5_000, "a": 2, "CPU": 10_000, "b": 1})
    assert a == b == "CPU=10000,GPU=5000,a=2,b=1"
    assert shape_of({}) == ""


@settings(max_examples=200, deadline=None)
@given(unit_maps)
def test_shape_parse_round_trip(units: dict[str, int]) -> None:
    shape = shape_of(units)
    assert parse_shape(shape) == units
    # canonical: same content in any order gives the same string
    assert shape_of(dict(reversed(list(units.items())))) == shape


@settings(max_examples=200, deadline=None)
@given(unit_maps, st.dictionaries(st.integers(0, 15).map(str), st.integers(1, 10_000), max_size=4))
def test_reservation_parse_round_trip(units: dict[str, int], gpus: dict[str, int]) -> None:
    reservation = shape_of(units) + ";" + ",".join(f"{k}={v}" for k, v in gpus.items())
    assert parse_reservation(reservation) == (units, gpus)


def test_parse_reservation_examples() -> None:
    assert parse_reservation("CPU=10000,GPU=5000;0=5000") == (
        {"CPU": 10_000, "GPU": 5_000},
        {"0": 5_000},
    )
    assert parse_reservation("CPU=10000;") == ({"CPU": 10_000}, {})
    assert parse_reservation(";") == ({}, {})
    assert parse_reservation("GPU=20000;1=10000,2=10000") == (
        {"GPU": 20_000},
        {"1": 10_000, "2": 10_000},
    )


def test_fits_and_missing() -> None:
    need = {"CPU": 20_000, "accel": 1}
    assert fits_totals(need, {"CPU": 20_000, "accel": 1})
    assert not fits_totals(need, {"CPU": 40_000})
    assert missing_resources(need, {"CPU": 10_000}) == ["CPU", "accel"]
    assert missing_resources(need, {"CPU": 20_000, "accel": 5}) == []
    assert fits_totals({}, {})


# -- GPU detection -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("visible", "ids"),
    [
        ("0,1", ["0", "1"]),
        ("", []),
        ("3", ["3"]),
        (" 2 , 5 ", ["2", "5"]),
        ("-1", []),
        ("GPU-1a2b,GPU-3c4d", ["GPU-1a2b", "GPU-3c4d"]),
    ],
)
def test_detect_gpus_from_cuda_visible_devices(monkeypatch, visible: str, ids: list[str]) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(res.shutil, "which", lambda name: pytest.fail("nvidia-smi consulted"))
    assert detect_gpus() == ids


def test_detect_gpus_without_env_or_nvidia_smi(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(res.shutil, "which", lambda name: None)
    assert detect_gpus() == []


def test_detect_gpus_from_nvidia_smi(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(res.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    listing = "GPU 0: NVIDIA H100 (UUID: GPU-a)\nGPU 1: NVIDIA H100 (UUID: GPU-b)\n"
    monkeypatch.setattr(res.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=listing))
    assert detect_gpus() == ["0", "1"]


def test_detect_gpus_when_nvidia_smi_fails(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(res.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def boom(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("nvidia-smi", 10)

    monkeypatch.setattr(res.subprocess, "run", boom)
    assert detect_gpus() == []


# -- node totals --------------------------------------------------------------------------------


def test_node_totals_counts(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    totals, gpus = node_totals(2, None, {"accel": 3}, memory=1000)
    assert gpus == ["4", "6"]
    assert totals == {"CPU": 20_000, "GPU": 20_000, "memory": 10_000_000, "accel": 30_000}


def test_node_totals_num_gpus_selects_visible_devices(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    totals, gpus = node_totals(1, 1, None, memory=1)
    assert gpus == ["4"] and totals["GPU"] == 10_000
    totals, gpus = node_totals(1, 0, None, memory=1)
    assert gpus == [] and "GPU" not in totals


def test_node_totals_rejects_bad_gpus_and_resources(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError):
        node_totals(1, 1.5, None, memory=1)
    with pytest.raises(ValueError):
        node_totals(1, -1, None, memory=1)
    with pytest.raises(ValueError):
        node_totals(1, None, {"CPU": 4}, memory=1)
    with pytest.raises(ValueError):
        node_totals(1, None, {"bad name": 4}, memory=1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_node_info_accepts_only_registrations(value: object) -> None:
    import json

    info = node_info(json.dumps(value))
    if info is not None:
        assert isinstance(info["node_id"], str)
        assert all(type(v) is int for v in info["totals"].values())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=60))
def test_node_info_of_random_bytes_is_none_or_a_registration(raw: bytes) -> None:
    info = node_info(raw)
    assert info is None or isinstance(info["totals"], dict)


def test_node_info_of_a_real_registration() -> None:
    raw = '{"node_id": "n1", "totals": {"CPU": 20000}, "pid": 7}'
    assert node_info(raw) == {"node_id": "n1", "totals": {"CPU": 20000}, "pid": 7}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_parse_shape_of_random_text_raises_only_value_error(text: str) -> None:
    try:
        parse_shape(text)
    except ValueError:
        pass


@pytest.mark.parametrize(("raw", "units"), [(b"10000", 10000), (b"junk", 0), (None, 0), ("-5", -5)])
def test_units_of_stored_values(raw: object, units: int) -> None:
    assert units_of(raw) == units
