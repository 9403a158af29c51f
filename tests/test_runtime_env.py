"""runtime_env ``working_dir`` and ``py_modules``: local directories shipped
through Redis to real worker nodes; the fields that install software refused."""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

import redray
from redray import constants, session
from redray import runtime_env as packages
from redray.exceptions import RuntimeEnvSetupError
from redray.settings import Settings
from workers.runtime_env_cache import node_dir


def make_helper(directory: Path, module: str, value: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(f"VALUE = {value!r}\n")
    return directory


def plant(wd: Path, blob: bytes | None, redis_client: redis.Redis) -> str:
    """Write ``blob`` (default: ``wd``'s own zip, unsigned) under the key the
    driver will store ``wd`` at, before it does (its SET NX keeps ours); the
    package's digest."""
    genuine = packages.pack(str(wd), "working_dir")
    digest = hashlib.sha256(genuine).hexdigest()
    runtime = session.current_runtime()
    redis_client.set(
        runtime.keys.package(runtime.job_id, digest), genuine if blob is None else blob
    )
    return digest


def unpacked(node_id: str, digest: str) -> bool:
    prefix = session.current_runtime().keys.prefix
    return os.path.exists(os.path.join(node_dir(prefix, node_id), digest))


@redray.remote
def import_value(module: str) -> str:
    return str(importlib.import_module(module).VALUE)


@redray.remote
def read_file(name: str) -> str:
    with open(name) as f:
        return f.read()


@redray.remote
def list_cwd() -> list[str]:
    found = []
    for dirpath, _, files in os.walk("."):
        found += [os.path.relpath(os.path.join(dirpath, f), ".") for f in files]
    return sorted(found)


@redray.remote
def where() -> tuple[int, str, str]:
    return os.getpid(), os.getcwd(), sys.path[0]


@redray.remote
def nested_import(module: str) -> str:
    return str(redray.get(import_value.remote(module), timeout=30))


@redray.remote
class Importer:
    def value(self, module: str) -> str:
        return str(importlib.import_module(module).VALUE)


def test_working_dir_module_is_importable_by_a_task(cluster: Any, tmp_path: Path) -> None:
    wd = make_helper(tmp_path / "wd", "rt_helper_wd", "from the driver")
    task = import_value.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote("rt_helper_wd"), timeout=30) == "from the driver"


def test_task_runs_with_working_dir_as_cwd(cluster: Any, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "config.txt").write_text("relative read")
    task = read_file.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote("config.txt"), timeout=30) == "relative read"


def test_job_working_dir_from_init_reaches_tasks(
    settings: Settings, node_factory: Any, tmp_path: Path
) -> None:
    node_factory(num_cpus=1)
    wd = make_helper(tmp_path / "wd", "rt_helper_job", "job level")
    redray.init(address=settings.to_url(), runtime_env={"working_dir": str(wd)})
    try:
        assert redray.get(import_value.remote("rt_helper_job"), timeout=30) == "job level"
    finally:
        redray.shutdown()


def test_py_modules_package_is_importable_by_a_task(cluster: Any, tmp_path: Path) -> None:
    pkg = tmp_path / "mods" / "rt_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("VALUE = 'package'\n")
    task = import_value.options(runtime_env={"py_modules": [str(pkg)]})
    assert redray.get(task.remote("rt_pkg"), timeout=30) == "package"


def test_py_modules_single_file_is_importable_by_a_task(cluster: Any, tmp_path: Path) -> None:
    make_helper(tmp_path, "rt_single", "single file")
    task = import_value.options(runtime_env={"py_modules": [str(tmp_path / "rt_single.py")]})
    assert redray.get(task.remote("rt_single"), timeout=30) == "single file"


def test_excludes_leave_files_out(cluster: Any, tmp_path: Path) -> None:
    wd = tmp_path / "wd"
    (wd / "data").mkdir(parents=True)
    (wd / "sub").mkdir()
    (wd / "keep.py").write_text("")
    (wd / "secret.txt").write_text("no")
    (wd / "data" / "big.bin").write_bytes(b"x")
    (wd / "sub" / "drop.log").write_text("no")
    (wd / "sub" / "keep.txt").write_text("")
    env = {"working_dir": str(wd), "excludes": ["secret.txt", "data/", "*.log"]}
    files = redray.get(list_cwd.options(runtime_env=env).remote(), timeout=30)
    assert files == ["keep.py", os.path.join("sub", "keep.txt")]


def test_too_large_working_dir_is_a_value_error_naming_it(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(constants, "MAX_PACKAGE_BYTES", 1000)
    wd = tmp_path / "bigdir"
    wd.mkdir()
    (wd / "blob.bin").write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match=r"bigdir.*1000-byte limit.*excludes"):
        read_file.options(runtime_env={"working_dir": str(wd)}).remote("blob.bin")


def test_missing_working_dir_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not a local directory"):
        packages.pack("/nonexistent/rt", "working_dir")


@pytest.mark.parametrize("field", ["pip", "conda", "uv", "container", "image_uri"])
def test_installing_fields_are_refused(field: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'.*does not install packages"):
        import_value.options(runtime_env={field: ["requests"]})


def test_pip_in_init_is_refused_before_connecting(settings: Settings) -> None:
    with pytest.raises(ValueError, match="'pip'.*does not install packages"):
        redray.init(address=settings.to_url(), runtime_env={"pip": ["requests"]})
    assert not redray.is_initialized()


def test_identical_directories_upload_once(
    cluster: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    a = make_helper(tmp_path / "a", "rt_same", "same")
    b = make_helper(tmp_path / "b", "rt_same", "same")
    refs = [
        import_value.options(runtime_env={"working_dir": str(d)}).remote("rt_same") for d in (a, b)
    ]
    assert redray.get(refs, timeout=30) == ["same", "same"]
    assert len(redis_client.keys("*:pkg:*")) == 1


def test_package_key_goes_when_the_job_ends(
    cluster: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    wd = make_helper(tmp_path / "wd", "rt_gone", "x")
    task = import_value.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote("rt_gone"), timeout=30) == "x"
    assert redis_client.keys("*:pkg:*")
    redray.shutdown()
    assert not redis_client.keys("*:pkg:*")


def test_forged_package_is_refused_and_not_unpacked(
    cluster: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    wd = make_helper(tmp_path / "wd", "rt_forged", "genuine")
    evil = make_helper(tmp_path / "evil", "rt_forged", "forged")
    digest = plant(wd, packages.pack(str(evil), "working_dir"), redis_client)
    task = import_value.options(runtime_env={"working_dir": str(wd)})
    with pytest.raises(RuntimeEnvSetupError, match="does not match its hash"):
        redray.get(task.remote("rt_forged"), timeout=30)
    assert not unpacked(cluster.node_id, digest)


def test_nested_task_inherits_working_dir(cluster: Any, tmp_path: Path) -> None:
    wd = make_helper(tmp_path / "wd", "rt_nested", "inherited")
    task = nested_import.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote("rt_nested"), timeout=60) == "inherited"


def test_actor_runs_with_working_dir(cluster: Any, tmp_path: Path) -> None:
    wd = make_helper(tmp_path / "wd", "rt_actor", "actor")
    actor = Importer.options(runtime_env={"working_dir": str(wd)}).remote()
    assert redray.get(actor.value.remote("rt_actor"), timeout=30) == "actor"


def test_cwd_and_sys_path_are_restored_after_the_task(
    settings: Settings, node_factory: Any, connect: Any, tmp_path: Path
) -> None:
    node_factory(num_cpus=1, config={"min_executors": 1, "max_executors": 1})
    connect()
    pid0, cwd0, path0 = redray.get(where.remote(), timeout=30)
    wd = tmp_path / "wd"
    wd.mkdir()
    pid1, cwd1, path1 = redray.get(
        where.options(runtime_env={"working_dir": str(wd)}).remote(), timeout=30
    )
    assert pid1 == pid0 and cwd1 != cwd0 and path1 == cwd1
    assert redray.get(where.remote(), timeout=30) == (pid0, cwd0, path0)


def test_pack_is_deterministic(tmp_path: Path) -> None:
    wd = make_helper(tmp_path / "wd", "rt_det", "x")
    first = packages.pack(str(wd), "working_dir")
    os.utime(wd / "rt_det.py", (0, 0))
    assert packages.pack(str(wd), "working_dir") == first


def test_zip_slip_entry_is_refused(tmp_path: Path) -> None:
    import io
    import zipfile

    from workers.runtime_env_cache import unpack

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../escaped.py", "X = 1\n")
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(RuntimeEnvSetupError, match="outside its directory"):
        unpack(buf.getvalue(), str(target))
    assert not (tmp_path / "escaped.py").exists()


def test_zip_bomb_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import zipfile

    from workers import runtime_env_cache

    monkeypatch.setattr(runtime_env_cache, "MAX_UNPACKED_BYTES", 10_000)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 100_000)
    with pytest.raises(RuntimeEnvSetupError, match="unpacks to more than"):
        runtime_env_cache.unpack(buf.getvalue(), str(tmp_path))
    assert not (tmp_path / "zeros.bin").exists()


def _cached_package(root: Path, digest: str, size: int, used_at: float) -> None:
    (root / digest).mkdir(parents=True)
    (root / digest / "data.bin").write_bytes(b"x" * size)
    use = root / f".{digest}.use"
    use.touch()
    os.utime(use, (used_at, used_at))


def test_node_cache_past_its_limit_removes_the_least_recently_used_packages(
    tmp_path: Path,
) -> None:
    from workers.runtime_env_cache import evict

    for n, digest in enumerate(["old", "middle", "new"]):
        _cached_package(tmp_path, digest, 1000, used_at=1000.0 + n)
    assert evict(str(tmp_path), limit=2000) == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "middle",
        "new",
    ]


def test_node_cache_never_removes_a_package_a_task_runs_in(tmp_path: Path) -> None:
    import fcntl

    from workers.runtime_env_cache import evict

    for n, digest in enumerate(["in_use", "idle"]):
        _cached_package(tmp_path, digest, 1000, used_at=1000.0 + n)
    with open(tmp_path / ".in_use.use", "a") as held:  # as a running task holds it
        fcntl.flock(held, fcntl.LOCK_SH)
        assert evict(str(tmp_path), limit=0) == ["idle"]
    assert (tmp_path / "in_use" / "data.bin").exists()
    assert evict(str(tmp_path), limit=0) == ["in_use"]  # released: it may go now


def test_function_from_a_working_dir_module_runs(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "rt_funcs.py").write_text(
        "import redray\n\n@redray.remote\ndef twice(x):\n    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(wd))  # the driver imports it; the node cannot
    module = importlib.import_module("rt_funcs")
    task = module.twice.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote(21), timeout=30) == 42


def test_forged_package_fails_its_signature_check_on_a_signed_cluster(
    settings: Settings, node_factory: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    secret = "runtime-env-secret"
    node = node_factory(num_cpus=1, config={"secret": secret})
    redray.init(address=settings.to_url(), _secret=secret)
    try:
        wd = make_helper(tmp_path / "wd", "rt_signed", "genuine")
        digest = plant(wd, None, redis_client)  # the genuine zip, unsigned
        task = import_value.options(runtime_env={"working_dir": str(wd)})
        with pytest.raises(RuntimeEnvSetupError, match="failed its signature check"):
            redray.get(task.remote("rt_signed"), timeout=30)
        assert not unpacked(node.node_id, digest)
    finally:
        redray.shutdown()


def test_actor_with_a_forged_package_fails_its_calls(
    cluster: Any, tmp_path: Path, redis_client: redis.Redis
) -> None:
    wd = make_helper(tmp_path / "wd", "rt_actor_forged", "genuine")
    plant(wd, b"forged", redis_client)
    actor = Importer.options(runtime_env={"working_dir": str(wd)}).remote()
    with pytest.raises(redray.exceptions.RayError, match="does not match its hash"):
        redray.get(actor.value.remote("rt_actor_forged"), timeout=30)


def test_node_removes_its_unpacked_packages_when_it_stops(cluster: Any, tmp_path: Path) -> None:
    wd = make_helper(tmp_path / "wd", "rt_node_dir", "x")
    task = import_value.options(runtime_env={"working_dir": str(wd)})
    assert redray.get(task.remote("rt_node_dir"), timeout=30) == "x"
    where_kept = node_dir(session.current_runtime().keys.prefix, cluster.node_id)
    assert len([d for d in os.listdir(where_kept) if not d.startswith(".")]) == 1
    cluster.stop()
    assert not os.path.exists(where_kept)
