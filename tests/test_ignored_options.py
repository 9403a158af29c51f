"""Options redray accepts but cannot honour warn once per process, naming the
option and what redray does instead; Ray's defaults stay silent."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import redray
from redray import ignored_options


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # each test starts as a fresh process would: nothing warned yet
    monkeypatch.setattr(ignored_options, "_warned", set())
    yield


def _warnings_of(make: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make()
    return [w for w in record if issubclass(w.category, UserWarning)]


def _f() -> int:
    return 1


class _Counter:
    def value(self) -> int:
        return 1


def test_an_ignored_task_option_warns_naming_it_and_what_redray_does() -> None:
    shown = _warnings_of(lambda: redray.remote(scheduling_strategy="SPREAD")(_f))
    assert len(shown) == 1
    assert "scheduling_strategy" in str(shown[0].message)
    assert "free resources" in str(shown[0].message)


def test_an_ignored_task_option_warns_once_per_process() -> None:
    first = _warnings_of(lambda: redray.remote(scheduling_strategy="SPREAD")(_f))
    again = _warnings_of(lambda: redray.remote(_f).options(scheduling_strategy="SPREAD"))
    assert len(first) == 1 and again == []


def test_the_warning_points_at_the_users_line() -> None:
    shown = _warnings_of(lambda: redray.remote(accelerator_type="A100")(_f))
    assert shown[0].filename == __file__


def test_rays_defaults_spelled_out_warn_nothing() -> None:
    defaults = {
        "scheduling_strategy": "DEFAULT",
        "placement_group": "default",
        "placement_group_bundle_index": -1,
        "placement_group_capture_child_tasks": None,
        "label_selector": {},
        "max_calls": 0,
        "enable_task_events": False,
        "runtime_env": {"env_vars": {"A": "1"}},
    }
    assert _warnings_of(lambda: redray.remote(**defaults)(_f)) == []


def test_an_ignored_actor_option_warns_naming_it() -> None:
    shown = _warnings_of(lambda: redray.remote(accelerator_type="A100")(_Counter))
    assert len(shown) == 1 and "actor option accelerator_type" in str(shown[0].message)


def test_an_ignored_actor_option_given_to_options_warns() -> None:
    actor_class = redray.remote(_Counter)
    shown = _warnings_of(lambda: actor_class.options(placement_group_bundle_index=0))
    assert len(shown) == 1 and "placement_group_bundle_index" in str(shown[0].message)


class _Tensors:
    @redray.method(tensor_transport="nccl")
    def value(self) -> int:
        return 1


def test_an_ignored_method_option_warns_naming_it() -> None:
    shown = _warnings_of(lambda: redray.remote(_Tensors))
    assert len(shown) == 1 and "tensor_transport" in str(shown[0].message)


def test_a_runtime_env_field_redray_does_not_apply_warns_naming_it() -> None:
    shown = _warnings_of(lambda: redray.remote(runtime_env={"nsight": "default"})(_f))
    assert len(shown) == 1
    assert "'nsight'" in str(shown[0].message) and "env_vars" in str(shown[0].message)
