"""``ray.job_config.JobConfig`` and ``init(job_config=...)`` as in Ray 2.60, and
the warnings ``init`` gives for keywords it accepts but cannot honour;
against a real server and real worker processes."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

import redray
from redray import ignored_options
from redray.job_config import JobConfig
from redray.settings import Settings


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # init() warns once per process: each test starts as a fresh process would
    monkeypatch.setattr(ignored_options, "_warned", set())
    yield


@redray.remote
def env(*names: str) -> list[str | None]:
    return [os.environ.get(n) for n in names]


@redray.remote
class EnvReader:
    def env(self, *names: str) -> list[str | None]:
        return [os.environ.get(n) for n in names]


def _user_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


def _init(settings: Settings, **kwargs: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        redray.init(address=settings.to_url(), **kwargs)
    return _user_warnings(record)


# -- JobConfig itself --------------------------------------------------------------------------


def test_job_config_is_at_rays_module_path() -> None:
    assert redray.job_config.JobConfig is JobConfig


def test_set_default_actor_lifetime_takes_only_detached_or_non_detached() -> None:
    config = JobConfig()
    config.set_default_actor_lifetime("detached")
    with pytest.raises(ValueError, match="detached"):
        config.set_default_actor_lifetime("forever")
    with pytest.raises(ValueError, match="detached"):
        JobConfig(default_actor_lifetime="forever")


def test_set_metadata_adds_or_overwrites_a_key() -> None:
    config = JobConfig(metadata={"team": "a"})
    config.set_metadata("team", "b")
    config.set_metadata("run", "7")
    assert config.metadata == {"team": "b", "run": "7"}


def test_from_json_reads_rays_keys() -> None:
    config = JobConfig.from_json(
        {"runtime_env": {"env_vars": {"A": "1"}}, "ray_namespace": "ns", "metadata": {"k": "v"}}
    )
    assert config.runtime_env == {"env_vars": {"A": "1"}}
    assert config.ray_namespace == "ns" and config.metadata == {"k": "v"}


def test_code_search_path_of_the_wrong_type_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="code search path"):
        JobConfig(code_search_path="/src")  # type: ignore[arg-type]


# -- init(job_config=...) ----------------------------------------------------------------------


def test_job_config_namespace_is_the_jobs_namespace(cluster_node: Any, settings: Settings) -> None:
    redray.init(address=settings.to_url(), job_config=JobConfig(ray_namespace="team"))
    assert redray.get_runtime_context().namespace == "team"


def test_init_namespace_replaces_the_job_configs_as_in_ray(
    cluster_node: Any, settings: Settings
) -> None:
    config = JobConfig(ray_namespace="team")
    redray.init(address=settings.to_url(), namespace="mine", job_config=config)
    assert redray.get_runtime_context().namespace == "mine"
    assert config.ray_namespace == "mine"


def test_init_runtime_env_replaces_the_job_configs_as_in_ray(
    cluster_node: Any, settings: Settings
) -> None:
    config = JobConfig(runtime_env={"env_vars": {"A": "job"}})
    redray.init(address=settings.to_url(), job_config=config, runtime_env={"env_vars": {"B": "i"}})
    assert config.runtime_env == {"env_vars": {"B": "i"}}


def test_job_config_of_the_wrong_type_is_a_type_error(settings: Settings) -> None:
    with pytest.raises(TypeError, match="JobConfig"):
        redray.init(address=settings.to_url(), job_config={"ray_namespace": "x"})  # type: ignore[arg-type]
    assert not redray.is_initialized()


def test_env_vars_that_are_not_strings_are_a_type_error_before_connecting(
    settings: Settings,
) -> None:
    with pytest.raises(TypeError, match=r"Dict\[str, str\]"):
        redray.init(address=settings.to_url(), runtime_env={"env_vars": {"A": 1}})
    assert not redray.is_initialized()


def test_job_runtime_env_env_vars_reach_its_tasks(cluster_node: Any, settings: Settings) -> None:
    config = JobConfig(runtime_env={"env_vars": {"JOB_A": "job"}})
    redray.init(address=settings.to_url(), job_config=config)
    assert redray.get(env.remote("JOB_A"), timeout=30) == ["job"]


def test_a_tasks_env_vars_merge_over_the_jobs_key_by_key(
    cluster_node: Any, settings: Settings
) -> None:
    config = JobConfig(runtime_env={"env_vars": {"JOB_A": "job", "JOB_B": "job"}})
    redray.init(address=settings.to_url(), job_config=config)
    own = env.options(runtime_env={"env_vars": {"JOB_B": "task"}})
    assert redray.get(own.remote("JOB_A", "JOB_B"), timeout=30) == ["job", "task"]


def test_init_runtime_env_env_vars_reach_actors(cluster_node: Any, settings: Settings) -> None:
    redray.init(address=settings.to_url(), runtime_env={"env_vars": {"JOB_A": "init"}})
    actor = EnvReader.remote()
    assert redray.get(actor.env.remote("JOB_A"), timeout=30) == ["init"]


def test_default_actor_lifetime_applies_to_actors_that_give_no_lifetime(
    cluster_node: Any, settings: Settings
) -> None:
    config = JobConfig(default_actor_lifetime="detached")
    redray.init(address=settings.to_url(), job_config=config)
    default = EnvReader.options(name="kept").remote()
    own = EnvReader.options(lifetime="non_detached").remote()
    try:
        redray.get([default.env.remote(), own.env.remote()], timeout=30)
        detached = {a["actor_id"]: a["is_detached"] for a in redray.util.state.list_actors()}
        assert detached[default._actor_id] and not detached[own._actor_id]
    finally:
        redray.kill(default)


@redray.remote
def env_of_child(*names: str) -> list[str | None]:
    return redray.get(env.remote(*names), timeout=30)


@redray.remote
def env_of_merged_child(*names: str) -> list[str | None]:
    child = env.options(runtime_env={"env_vars": {"JOB_B": "child"}})
    return redray.get(child.remote(*names), timeout=30)


@redray.remote
def start_named_actor(name: str) -> str:
    actor = EnvReader.options(name=name).remote()
    redray.get(actor.env.remote(), timeout=30)
    return actor._actor_id


def test_a_task_started_by_a_task_inherits_the_jobs_runtime_env(
    cluster_node: Any, settings: Settings
) -> None:
    redray.init(address=settings.to_url(), runtime_env={"env_vars": {"JOB_A": "job"}})
    assert redray.get(env_of_child.remote("JOB_A"), timeout=30) == ["job"]


def test_a_task_started_by_a_task_inherits_its_parents_runtime_env_under_its_own(
    cluster_node: Any, settings: Settings
) -> None:
    # as measured on Ray 2.60: the parent's env_vars reach the child, whose own win key by key
    redray.init(address=settings.to_url(), runtime_env={"env_vars": {"JOB_A": "job"}})
    parent = env_of_merged_child.options(runtime_env={"env_vars": {"JOB_A": "p", "JOB_B": "p"}})
    assert redray.get(parent.remote("JOB_A", "JOB_B"), timeout=30) == ["p", "child"]


def test_an_actor_started_by_a_task_gets_the_jobs_default_lifetime(
    cluster_node: Any, settings: Settings
) -> None:
    config = JobConfig(default_actor_lifetime="detached")
    redray.init(address=settings.to_url(), job_config=config)
    actor_id = redray.get(start_named_actor.remote("nested_kept"), timeout=60)
    try:
        detached = {a["actor_id"]: a["is_detached"] for a in redray.util.state.list_actors()}
        assert detached[actor_id] is True
    finally:
        redray.kill(redray.get_actor("nested_kept"))


def test_job_config_option_redray_cannot_honour_warns_naming_it(
    cluster_node: Any, settings: Settings
) -> None:
    shown = _init(settings, job_config=JobConfig(jvm_options=["-Xmx1g"]))
    assert len(shown) == 1 and "jvm_options" in shown[0]


def test_runtime_env_field_other_than_env_vars_warns_naming_it(
    cluster_node: Any, settings: Settings
) -> None:
    shown = _init(settings, runtime_env={"nsight": "default", "env_vars": {"A": "1"}})
    assert len(shown) == 1 and "'nsight'" in shown[0] and "env_vars" in shown[0]


# -- init's accepted-but-ignored keywords ------------------------------------------------------


def test_init_with_rays_defaults_spelled_out_warns_nothing(
    cluster_node: Any, settings: Settings
) -> None:
    # a guard: the values that ask for nothing redray fails to do stay silent
    shown = _init(
        settings,
        include_dashboard=False,
        configure_logging=True,
        logging_level="info",
        log_to_driver=True,
        local_mode=False,
        object_store_memory=None,
        _system_config={},
    )
    assert shown == []


def test_ignored_init_keyword_warns_naming_it_and_what_redray_does(
    cluster_node: Any, settings: Settings
) -> None:
    shown = _init(settings, object_store_memory=10**9)
    assert len(shown) == 1
    assert "object_store_memory" in shown[0] and "maxmemory" in shown[0]


def test_ignored_init_keyword_warns_once_per_process(cluster_node: Any, settings: Settings) -> None:
    assert len(_init(settings, labels={"zone": "a"})) == 1
    redray.shutdown()
    assert _init(settings, labels={"zone": "a"}) == []


def test_ignored_init_keyword_warning_does_not_show_its_value(
    cluster_node: Any, settings: Settings
) -> None:
    shown = _init(settings, _redis_password="hunter2")
    assert len(shown) == 1
    assert "_redis_password" in shown[0] and "hunter2" not in shown[0]


def test_init_accepts_rays_logging_config_keyword_with_a_warning(
    cluster_node: Any, settings: Settings
) -> None:
    shown = _init(settings, logging_config={"encoding": "JSON"})
    assert len(shown) == 1 and "logging_config" in shown[0]


@pytest.fixture
def cluster_node(node_factory: Any) -> Iterator[Any]:
    """A 2-CPU node; the test connects the driver itself (with its init options)."""
    node = node_factory(num_cpus=2)
    yield node
    redray.shutdown()
