"""Ray's ``ray.job_config.JobConfig``: the configuration of a job, given to
``init(job_config=...)``.

What redray honours: ``ray_namespace`` (as ``init(namespace=...)``, which
wins over it), the ``env_vars``, ``working_dir``, ``py_modules`` and
``excludes`` of ``runtime_env`` (the job's default for the
tasks and actors it submits, merged under their own) and
``default_actor_lifetime``. ``metadata`` is kept on the object. ``init``
warns once for each other option set to something redray cannot do.

This module imports nothing from redray: the submit paths read the job's
defaults here without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_LIFETIMES = ("detached", "non_detached")


class JobConfig:
    """A class used to store the configurations of a job.

    Args:
        jvm_options: The jvm options for java workers of the job (redray runs
            no Java workers: ignored, with a warning).
        code_search_path: Directories or jar files added to the search path of
            the job's workers (ignored by redray, with a warning).
        runtime_env: A runtime environment dictionary: the default for the
            job's tasks and actors. redray applies its ``env_vars``,
            ``working_dir``, ``py_modules`` and ``excludes``.
        metadata: An opaque metadata dictionary.
        ray_namespace: The namespace of the job (a logical grouping of jobs and
            named actors).
        default_actor_lifetime: The lifetime of actors created without a
            ``lifetime`` option: ``"detached"`` or ``"non_detached"``.
    """

    def __init__(
        self,
        jvm_options: list[str] | None = None,
        code_search_path: list[str] | None = None,
        runtime_env: dict[str, Any] | None = None,
        _client_job: bool = False,
        metadata: dict[str, Any] | None = None,
        ray_namespace: str | None = None,
        default_actor_lifetime: str = "non_detached",
        _disable_job_level_lineage_reconstruction: bool = False,
        _py_driver_sys_path: list[str] | None = None,
    ) -> None:
        #: The jvm options for java workers of the job.
        self.jvm_options = jvm_options or []
        search_path = code_search_path or []
        if not isinstance(search_path, (list, tuple)):
            raise TypeError(f"The type of code search path is incorrect: {type(code_search_path)}")
        #: Directories or jar files on the search path of the job's workers.
        self.code_search_path = search_path
        self._client_job = _client_job
        #: An opaque metadata dictionary.
        self.metadata: dict[str, Any] = metadata or {}
        #: The job's namespace (None: a fresh one per job).
        self.ray_namespace = ray_namespace
        self.runtime_env: Any = {}
        self.set_runtime_env(runtime_env)
        self._default_actor_lifetime = "non_detached"
        self.set_default_actor_lifetime(default_actor_lifetime)
        self._disable_job_level_lineage_reconstruction = _disable_job_level_lineage_reconstruction
        self._py_driver_sys_path = _py_driver_sys_path or []
        #: Python logging configuration for the job's workers (not applied by redray).
        self.py_logging_config: Any = None

    def set_metadata(self, key: str, value: str) -> None:
        """Add a key-value pair to the metadata dictionary (overwriting the key)."""
        self.metadata[key] = value

    def set_runtime_env(
        self, runtime_env: Mapping[str, Any] | None, validate: bool = False
    ) -> None:
        """Replace the job's runtime_env; with ``validate``, check it now."""
        # kept as given: init() checks it (TypeError) before anything starts
        self.runtime_env = runtime_env if runtime_env is not None else {}
        if validate:
            self.runtime_env = validate_runtime_env(self.runtime_env)

    def set_py_logging_config(self, logging_config: Any = None) -> None:
        """Set the logging configuration for the job's workers (not applied by redray)."""
        self.py_logging_config = logging_config

    def ensure_logging_config(self, logging_config: Any = None) -> None:
        """Set the logging configuration unless it is None or already set."""
        if logging_config is None or self.py_logging_config is not None:
            return
        self.set_py_logging_config(logging_config)

    def set_ray_namespace(self, ray_namespace: str) -> None:
        """Set the job's namespace."""
        self.ray_namespace = ray_namespace

    def set_default_actor_lifetime(self, default_actor_lifetime: str) -> None:
        """Set the default actor lifetime: ``"detached"`` or ``"non_detached"``."""
        if default_actor_lifetime not in _LIFETIMES:
            raise ValueError("Default actor lifetime must be one of `detached`, `non_detached`")
        self._default_actor_lifetime = default_actor_lifetime

    @classmethod
    def from_json(cls, job_config_json: dict[str, Any]) -> JobConfig:
        """A JobConfig from its JSON dictionary, e.g.
        ``JobConfig.from_json({"runtime_env": {"env_vars": {"A": "1"}}})``."""
        return cls(
            jvm_options=job_config_json.get("jvm_options", None),
            code_search_path=job_config_json.get("code_search_path", None),
            runtime_env=job_config_json.get("runtime_env", None),
            metadata=job_config_json.get("metadata", None),
            ray_namespace=job_config_json.get("ray_namespace", None),
            _disable_job_level_lineage_reconstruction=job_config_json.get(
                "disable_job_level_lineage_reconstruction", False
            ),
            _client_job=job_config_json.get("client_job", False),
            _py_driver_sys_path=job_config_json.get("py_driver_sys_path", None),
        )

    def _unsupported(self) -> list[tuple[str, str]]:
        """(option, why) for each option set to something redray cannot do."""
        out = []
        if self.jvm_options:
            out.append(("jvm_options", "redray runs no Java workers"))
        if self.code_search_path:
            out.append(
                (
                    "code_search_path",
                    "redray's workers import the job's modules from their node's "
                    "PYTHONPATH (a local cluster's node gets the driver's sys.path)",
                )
            )
        if self._py_driver_sys_path:
            out.append(
                (
                    "_py_driver_sys_path",
                    "redray's workers import the job's modules from their node's PYTHONPATH",
                )
            )
        if self._client_job:
            out.append(("_client_job", "redray has no Ray Client: drivers connect directly"))
        if self.py_logging_config is not None:
            out.append(("py_logging_config", "redray does not configure its workers' loggers"))
        return out

    def __repr__(self) -> str:
        return (
            f"JobConfig(ray_namespace={self.ray_namespace!r}, runtime_env={self.runtime_env!r}, "
            f"default_actor_lifetime={self._default_actor_lifetime!r}, metadata={self.metadata!r})"
        )


def validate_runtime_env(runtime_env: Any) -> dict[str, Any]:
    """``runtime_env`` as a dict; TypeError, in Ray's words, when it or its
    ``env_vars`` has the wrong type."""
    if not isinstance(runtime_env, Mapping):
        raise TypeError(f"runtime_env must be a dict, got {type(runtime_env)}")
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None:
        if not isinstance(env_vars, Mapping):
            raise TypeError(
                f"runtime_env['env_vars'] must be of type Dict[str, str], got {type(env_vars)}"
            )
        for key, value in env_vars.items():
            if not isinstance(key, str):
                raise TypeError(
                    "runtime_env['env_vars'] must be of type Dict[str, str], "
                    f"but the key {key} is of type {type(key)}"
                )
            if not isinstance(value, str):
                raise TypeError(
                    "runtime_env['env_vars'] must be of type Dict[str, str], "
                    f"but the value {value} is of type {type(value)}"
                )
    return dict(runtime_env)


# -- the job this process drives ------------------------------------------------------------
class _Job:
    """What the connected driver's job gives the tasks and actors it submits
    (set by ``init``, cleared by ``shutdown``; empty in a worker process)."""

    runtime_env: dict[str, Any] | None = None
    default_actor_lifetime: str | None = None


_job = _Job()


def set_job_defaults(
    runtime_env: dict[str, Any] | None, default_actor_lifetime: str | None
) -> None:
    """Called by ``init`` (and by ``shutdown``, with Nones)."""
    _job.runtime_env = dict(runtime_env) if runtime_env else None
    _job.default_actor_lifetime = default_actor_lifetime


def inherit_from(extra: Mapping[str, Any] | None) -> None:
    """Called where a task or actor runs, with its spec's ``extra``: the tasks
    and actors it submits inherit its runtime_env (merged under their own)
    and its job's default actor lifetime, as in Ray. A worker process calls
    ``set_job_defaults(None, None)`` when the task ends."""
    extra = extra or {}
    set_job_defaults(extra.get("runtime_env"), extra.get("job_actor_lifetime"))


def spec_extra() -> dict[str, Any]:
    """What a spec's ``extra`` carries so that the task's own submissions
    inherit the job's defaults (nothing when they are Ray's defaults)."""
    if _job.default_actor_lifetime == "detached":
        return {"job_actor_lifetime": "detached"}
    return {}


def runtime_env_for(runtime_env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The runtime_env a task or actor submitted here runs with: its own over
    the job's, as Ray merges them (``env_vars`` key by key, the task's value
    winning; any other field the task gives replaces the job's)."""
    job = _job.runtime_env
    if not job:
        return runtime_env
    if not runtime_env:
        return job
    merged = {**job, **runtime_env}
    if "env_vars" in job and "env_vars" in runtime_env:
        merged["env_vars"] = {**(job["env_vars"] or {}), **(runtime_env["env_vars"] or {})}
    return merged


def actor_lifetime(lifetime: str | None) -> str | None:
    """An actor's lifetime: its own ``lifetime`` option, else the job's default."""
    return lifetime if lifetime is not None else _job.default_actor_lifetime


__all__ = ["JobConfig"]
