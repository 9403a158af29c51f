"""The docker-compose deployment (docker/), tested without a Docker engine.

* the compose file parses and has the promised shape, with secrets only as
  ``${VAR}`` references that docker/.env.example defines;
* every redray service's command line is accepted by the CLI, with the
  service's environment;
* the Dockerfile: slim base, non-root user, ``redray`` as the entrypoint;
* the topology as plain processes, end to end: the Redis service's own shell
  command (its flags from the compose file, the port and data directory
  replaced), the worker service's command line ``replicas`` times, the driver
  service's command, then SIGTERM as ``docker compose down`` sends it;
* the README's setup commands, run as written.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import psutil
import pytest
import redis
import yaml
from conftest import (
    REPO_ROOT,
    assert_back_to_baseline,
    cluster_keys,
    wait_for,
    wait_gone,
    worker_env,
)

from redray.cli.main import cli
from redray.cli.options import resolve
from redray.constants import Keys
from redray.server import find_server_binary, free_port
from redray.settings import Settings

DOCKER = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"

#: the variables of docker/.env that hold secrets
SECRET_VARS = ("REDIS_PASSWORD", "REDRAY_SECRET", "REDRAY_DASHBOARD_TOKEN")
#: the services that run the image's ``redray`` entrypoint
REDRAY_SERVICES = ("dashboard", "worker", "gpu-worker")

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR, and $$
_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


# -- the compose file as Compose reads it -----------------------------------------------------
def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (comments and blank lines skipped), as Compose reads a .env."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not a KEY=VALUE line: {line!r}"
        out[key.strip()] = value.strip()
    return out


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` with Compose's variable interpolation applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _REFERENCE.sub(one, value)


def references(value: Any) -> set[str]:
    """The variables a compose value refers to."""
    if isinstance(value, dict):
        return set().union(*(references(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(references(v) for v in value), set())
    if not isinstance(value, str):
        return set()
    return {m["braced"] or m["bare"] for m in _REFERENCE.finditer(value) if not m["escaped"]}


def generated_env() -> dict[str, str]:
    """docker/.env as the README makes it: .env.example with fresh hex secrets."""
    env = read_env_file(ENV_EXAMPLE)
    for name in SECRET_VARS:
        env[name] = secrets.token_hex(32)
    return env


def service_argv(service: dict[str, Any], image_entrypoint: list[str]) -> list[str]:
    entrypoint = service.get("entrypoint", image_entrypoint)
    command = service.get("command", [])
    assert isinstance(entrypoint, list) and isinstance(command, list), "use the exec (list) form"
    return [*entrypoint, *command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def image_entrypoint() -> list[str]:
    import json

    found = [json.loads(a) for i, a in dockerfile_instructions() if i == "ENTRYPOINT"]
    assert found, "the Dockerfile has no ENTRYPOINT"
    entry = found[-1]
    assert isinstance(entry, list)
    return entry


def image_copies() -> dict[str, Path]:
    """Where the Dockerfile's COPY puts single files: image path -> file here."""
    out: dict[str, Path] = {}
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY" and not args.startswith("--"):
            *sources, dest = args.split()
            for source in sources:
                if (REPO_ROOT / source).is_file():
                    target = dest if not dest.endswith("/") else dest + Path(source).name
                    out[target] = REPO_ROOT / source
    return out


def local_argv(argv: list[str]) -> list[str]:
    """A container's command line as a process here: the image's ``redray``
    and ``python`` are this interpreter, its files the repository's."""
    copies = image_copies()
    if argv[0] == "redray":
        head = [sys.executable, "-m", "redray.cli.main"]
    elif argv[0] == "python":
        head = [sys.executable]
    else:
        raise AssertionError(f"unexpected program {argv[0]!r}")
    return head + [str(copies.get(a, a)) for a in argv[1:]]


def grace_seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", value)
    assert match, f"stop_grace_period {value!r}"
    return float(match[1]) * (60 if match[2] == "m" else 1)


# -- (1) the compose file ---------------------------------------------------------------------
def test_compose_file_structure() -> None:
    compose = load_compose()
    services = compose["services"]
    assert {"redis", "dashboard", "worker", "gpu-worker", "driver"} <= set(services)

    redis_service = services["redis"]
    assert re.fullmatch(r"redis:[\w.-]+", redis_service["image"]), "the official redis image"
    script = " ".join(redis_service["command"])
    assert "--appendonly yes" in script
    assert "--requirepass" not in script, "the password goes in a config file, not argv"
    health = redis_service["healthcheck"]
    assert health["test"][0] == "CMD-SHELL" and "redis-cli" in health["test"][1]
    assert " -a " not in f" {health['test'][1]} ", "redis-cli takes the password from REDISCLI_AUTH"
    assert redis_service["environment"]["REDISCLI_AUTH"].startswith("${REDIS_PASSWORD")
    named = [v.split(":")[0] for v in redis_service["volumes"]]
    assert "redis-data" in named and "redis-data" in compose["volumes"]
    assert "redis-data:/data" in redis_service["volumes"]
    assert "--dir /data" in script

    worker = services["worker"]
    assert worker["command"][0] == "worker"
    assert isinstance(worker["deploy"]["replicas"], int) and worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker, "a fixed name forbids replicas"
    for name in ("worker", "gpu-worker", "dashboard", "driver"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"

    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    command = gpu["command"]
    assert command[0] == "worker"
    assert int(command[command.index("--num-gpus") + 1]) == device["count"]

    assert services["driver"]["profiles"] == ["driver"]
    assert services["driver"]["restart"] == "no"
    assert services["dashboard"]["command"][:1] == ["dashboard"]


def test_compose_secrets_are_references_defined_in_env_example() -> None:
    compose = load_compose()
    example = read_env_file(ENV_EXAMPLE)
    used = references(compose)
    assert set(SECRET_VARS) <= used
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f"unused in the compose file: {sorted(set(example) - used)}"
    for name in SECRET_VARS:
        assert example[name] == "", f".env.example must not ship a value for {name}"

    # no secret on any command line: only in environments, as references
    for name, service in compose["services"].items():
        argv = " ".join(
            [*service.get("entrypoint", []), *service.get("command", [])]
            + list(service.get("healthcheck", {}).get("test", []))
        )
        assert not (references(argv) & set(SECRET_VARS)), f"a secret in {name}'s command line"
        for key, value in (service.get("environment") or {}).items():
            if key in SECRET_VARS or key in ("REDISCLI_AUTH", "REDRAY_SECRET"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), f"{name}.{key}={value!r}"
            if key == "REDRAY_ADDRESS":
                assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/0", value), (
                    value
                )
    # the redis service's shell reads the password from its environment only
    script = compose["services"]["redis"]["command"][0]
    assert script.count("$$REDIS_PASSWORD") == 1
    assert script.index("$$REDIS_PASSWORD") < script.index("exec redis-server")

    # Compose refuses to start while a secret is missing (.env.example copied as is)
    with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
        interpolate(compose, example)
    resolved = interpolate(compose, generated_env())
    assert "${" not in repr(resolved)


# -- (2) every redray service's command line, as the CLI parses it ----------------------------
@pytest.mark.parametrize("name", REDRAY_SERVICES)
def test_service_command_accepted_by_cli(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env = generated_env()
    service = interpolate(load_compose(), env)["services"][name]
    argv = service_argv(service, image_entrypoint())
    assert argv[0] == "redray"
    for key in list(os.environ):
        if key.startswith("REDRAY_"):
            monkeypatch.delenv(key)
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, value)
    with click.Context(cli) as group_ctx:
        command = cli.get_command(group_ctx, argv[1])
    assert command is not None, f"`redray {argv[1]}` does not exist"
    # parses the options and applies their callbacks and envvars; runs nothing
    ctx = command.make_context(argv[1], argv[2:])
    params = ctx.params
    settings = resolve(params["address"])
    assert (settings.host, settings.port, settings.db) == ("redis", 6379, 0)
    assert settings.password == env["REDIS_PASSWORD"]
    assert settings.secret == env["REDRAY_SECRET"]
    if name == "dashboard":
        assert (params["host"], params["port"]) == ("0.0.0.0", 8265)
        assert params["token"] == env["REDRAY_DASHBOARD_TOKEN"]
    else:
        assert params["num_cpus"] == float(env["WORKER_NUM_CPUS"])
        assert params["num_gpus"] == (1 if name == "gpu-worker" else None)


# -- (3) the image ----------------------------------------------------------------------------
def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    froms = [a for i, a in instructions if i == "FROM"]
    assert froms == ["python:3.11-slim"]
    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0"), "redray runs as a non-root user"
    runs = " ".join(a for i, a in instructions if i == "RUN")
    assert "useradd" in runs and users[-1] in runs
    assert "pip install ." in runs
    assert image_entrypoint() == ["redray"]
    # the driver service runs the file the image copies
    driver = load_compose()["services"]["driver"]
    assert image_copies()[driver["command"][0]] == DOCKER / "example_driver.py"
    # the build context leaves out the secrets and the local environments
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {"docker/.env", ".venv", ".git"} <= set(ignored)
    build = load_compose()["x-redray"]["build"]
    assert (DOCKER / build["context"]).resolve() == REPO_ROOT
    assert (REPO_ROOT / build["dockerfile"]).resolve() == DOCKERFILE


def test_dockerfile_copies_every_package_directory() -> None:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    package_dirs = {p.split("/")[0] for p in project["tool"]["setuptools"]["package-dir"].values()}
    copied: set[str] = set()
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            copied.update(Path(s).parts[0] for s in args.split()[:-1])
    assert package_dirs | {"pyproject.toml", project["project"]["readme"]} <= copied


# -- (4) the topology as plain processes ------------------------------------------------------
class RedisService:
    """The redis service's own shell command, run here: the binary, port,
    data directory and config path replaced, bound to loopback."""

    def __init__(self, env: dict[str, str], data: Path, run_dir: Path) -> None:
        service = interpolate(load_compose(), env)["services"]["redis"]
        assert service["entrypoint"] == ["/bin/sh", "-c"]
        (script,) = service["command"]
        self.port = free_port()
        binary = os.environ.get("REDRAY_TEST_SERVER") or find_server_binary()
        self.auth_conf = run_dir / "redray-auth.conf"
        for old, new in (
            ("exec redis-server ", f"exec {shlex.quote(binary)} "),
            ("/tmp/redray-auth.conf", shlex.quote(str(self.auth_conf))),
            ("--port 6379", f"--port {self.port}"),
            ("--dir /data", f"--dir {shlex.quote(str(data))}"),
        ):
            assert old in script, f"the redis service's command no longer has {old!r}"
            script = script.replace(old, new)
        self.script = script + " --bind 127.0.0.1"
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **service["environment"]}
        self.grace = grace_seconds(service["stop_grace_period"])
        self.healthcheck = service["healthcheck"]["test"][1]
        self.password = env["REDIS_PASSWORD"]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", self.script],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, f"the server exited: {self.process.returncode}"
            try:
                with self.client() as client:
                    client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "the redis service did not come up"
                time.sleep(0.05)

    def client(self, password: str | None = "") -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password if password == "" else password,
            socket_timeout=10,
        )

    def stop(self) -> None:
        """SIGTERM, as ``docker compose stop`` sends it; it must exit in its grace period."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(self.grace)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@contextmanager
def redis_service(env: dict[str, str], tmp_path: Path) -> Iterator[RedisService]:
    data = tmp_path / "data"
    run_dir = tmp_path / "run"
    data.mkdir()
    run_dir.mkdir()
    server = RedisService(env, data, run_dir)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def cluster_env(service: dict[str, Any], port: int) -> dict[str, str]:
    """A process's environment: this machine's, less any REDRAY_*, plus the
    service's, its address pointed at the test server."""
    env = {k: v for k, v in worker_env().items() if not k.startswith("REDRAY_")}
    env.update(service["environment"])
    address = env["REDRAY_ADDRESS"]
    assert "@redis:6379/" in address
    env["REDRAY_ADDRESS"] = address.replace("@redis:6379/", f"@127.0.0.1:{port}/")
    return env


def command_lines(procs: list[psutil.Process]) -> str:
    out = []
    for proc in procs:
        try:
            out.append(" ".join(proc.cmdline()))
        except psutil.Error:
            pass
    return "\n".join(out)


def test_compose_topology_as_processes(tmp_path: Path) -> None:
    env = generated_env()
    compose = interpolate(load_compose(), env)
    services = compose["services"]
    entry = image_entrypoint()
    replicas = services["worker"]["deploy"]["replicas"]
    grace = grace_seconds(services["worker"]["stop_grace_period"])
    keys = Keys()
    workers: list[subprocess.Popen[bytes]] = []
    with redis_service(env, tmp_path) as server:
        # the password reached the server through its config file only
        assert stat.S_IMODE(server.auth_conf.stat().st_mode) == 0o600
        assert server.process is not None
        assert env["REDIS_PASSWORD"] not in command_lines([psutil.Process(server.process.pid)])
        with server.client(password=None) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        client = server.client()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        baseline = cluster_keys(client, keys)
        try:
            worker_argv = local_argv(service_argv(services["worker"], entry))
            worker_envs = cluster_env(services["worker"], server.port)
            for i in range(replicas):
                log = open(tmp_path / f"worker-{i}.log", "wb")
                workers.append(
                    subprocess.Popen(
                        worker_argv,
                        env=worker_envs,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
                log.close()

            def logs() -> str:
                return "\n".join(
                    (tmp_path / f"worker-{i}.log").read_text(errors="replace")
                    for i in range(replicas)
                )

            def all_up() -> bool:
                assert all(w.poll() is None for w in workers), logs()
                return bool(client.hlen(keys.nodes) == replicas)

            wait_for(all_up, timeout=60, what=f"{replicas} worker nodes")
            node_ids = {n.decode() if isinstance(n, bytes) else n for n in client.hkeys(keys.nodes)}

            driver = services["driver"]
            result = subprocess.run(
                local_argv(service_argv(driver, entry)),
                env=cluster_env(driver, server.port),
                capture_output=True,
                text=True,
                timeout=180,
                stdin=subprocess.DEVNULL,
            )
            output = result.stdout + result.stderr
            assert result.returncode == 0, output
            squares = [i * i for i in range(16)]
            assert f"cluster: {replicas} node(s), {replicas * 2:g} CPU" in result.stdout, output
            assert f"squares: {squares}" in result.stdout, output
            assert "counter: 10" in result.stdout, output
            assert result.stdout.rstrip().endswith("ok"), output
            (ran_on,) = [line for line in result.stdout.splitlines() if "tasks ran on" in line]
            assert set(ran_on.split(": ", 1)[1].split()) <= node_ids, ran_on

            # neither the password nor the secret is on any command line
            tree = [psutil.Process(w.pid) for w in workers]
            children = [c for p in tree for c in p.children(recursive=True)]
            lines = command_lines(tree + children)
            assert env["REDIS_PASSWORD"] not in lines and env["REDRAY_SECRET"] not in lines

            # `docker compose stop`: SIGTERM to each container's process, SIGKILL after the grace
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            started = time.monotonic()
            for worker in workers:
                worker.wait(max(grace - (time.monotonic() - started), 0.1))
            assert [w.returncode for w in workers] == [0] * replicas, logs()
            assert wait_gone(children, 10) == [], "executors outlived their worker"
            assert client.hlen(keys.nodes) == 0
            assert_back_to_baseline(client, keys, baseline, gone_nodes=node_ids)
            jobs = client.get(keys.tag + ":jobcounter")
            assert jobs is not None
        finally:
            for worker in workers:
                if worker.poll() is None:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(10)
            client.close()

        # the data outlives the server (the named volume's AOF): stop, start again, read
        server.stop()
        assert any((tmp_path / "data").glob("appendonly*")), "no append-only file"
        server.start()
        with server.client() as again:
            assert again.get(keys.tag + ":jobcounter") == jobs
        server.stop()


def test_redis_healthcheck_authenticates_from_env(tmp_path: Path) -> None:
    cli_binary = shutil.which("redis-cli") or shutil.which("valkey-cli")
    if cli_binary is None:
        pytest.skip("no redis-cli or valkey-cli on PATH to run the healthcheck with")
    env = generated_env()
    with redis_service(env, tmp_path) as server:
        check = server.healthcheck.replace(
            "redis-cli", f"{shlex.quote(cli_binary)} -p {server.port}", 1
        )
        ok = subprocess.run(["/bin/sh", "-c", check], env=server.env, timeout=30)
        assert ok.returncode == 0
        wrong = {**server.env, "REDISCLI_AUTH": "not-the-password"}
        refused = subprocess.run(
            ["/bin/sh", "-c", check], env=wrong, timeout=30, capture_output=True
        )
        assert refused.returncode != 0
        server.stop()


# -- (5) the README's deployment section ------------------------------------------------------
def readme_section() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("## Deploy with docker compose")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(section: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", section, re.S)


def _run_as_written(script: str, cwd: Path) -> None:
    """Run README lines with bash, stopping at the first failing command."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_setup_commands_run_as_written(tmp_path: Path) -> None:
    (setup,) = [b for b in code_blocks(readme_section()) if "cp docker/.env.example" in b]
    lines = [line for line in setup.splitlines() if line.strip()]
    assert not any(line.lstrip().startswith("docker ") for line in lines), "needs an engine"
    (tmp_path / "docker").mkdir()
    shutil.copy(ENV_EXAMPLE, tmp_path / "docker" / ".env.example")
    _run_as_written(setup, tmp_path)
    made = tmp_path / "docker" / ".env"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    env = read_env_file(made)
    values = [env[name] for name in SECRET_VARS]
    assert all(re.fullmatch(r"[0-9a-f]{64}", v) for v in values), values
    assert len(set(values)) == len(values)
    assert "${" not in repr(interpolate(load_compose(), env))


def test_readme_compose_commands_name_real_services() -> None:
    section = readme_section()
    compose = load_compose()
    services = set(compose["services"])
    profiles = {p for s in compose["services"].values() for p in s.get("profiles", [])}
    commands = [
        line.strip()
        for block in code_blocks(section)
        for line in block.splitlines()
        if line.strip().startswith("docker compose")
    ]
    assert commands
    for command in commands:
        assert "--env-file docker/.env -f docker/docker-compose.yml" in command, command
        for name in re.findall(r"--scale (\S+?)=", command):
            assert name in services, command
        for name in re.findall(r"--profile (\S+)", command):
            assert name in profiles, command
        for name in re.findall(r" (?:run --rm|exec|logs|stop|restart) ([a-z][\w-]*)", command):
            assert name in services, command
    assert any("--scale worker=" in c for c in commands)
    assert any("--profile gpu" in c for c in commands)
    assert any("run --rm driver" in c for c in commands)


def test_readme_worker_env_file_commands_run_as_written(tmp_path: Path) -> None:
    """The GPU machine's environment file, made as the README says (its
    `docker` lines left out: they need an engine)."""
    (block,) = [b for b in code_blocks(readme_section()) if "docker/.env.worker" in b]
    setup = "\n".join(line for line in block.splitlines() if not line.startswith("docker "))
    assert "printf" in setup
    env = generated_env()
    (tmp_path / "docker").mkdir()
    (tmp_path / "docker" / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    _run_as_written(setup, tmp_path)
    made = tmp_path / "docker" / ".env.worker"
    assert stat.S_IMODE(made.stat().st_mode) == 0o600
    worker = read_env_file(made)
    assert set(worker) == {"REDRAY_ADDRESS", "REDRAY_SECRET"}
    assert worker["REDRAY_SECRET"] == env["REDRAY_SECRET"]
    settings = Settings.from_url(worker["REDRAY_ADDRESS"])
    assert (settings.host, settings.port) == ("head-host", int(env["REDIS_PORT"]))
    assert settings.password == env["REDIS_PASSWORD"]


def test_image_copies_build_the_whole_package(tmp_path: Path) -> None:
    """What the Dockerfile copies into /src is enough to build redray: the
    wheel ``pip install .`` would install there holds every module, Lua
    script and static file of the repository's packages, and the entry point."""
    import zipfile

    src = tmp_path / "src"
    src.mkdir()
    workdir: str | None = None
    for instruction, args in dockerfile_instructions():
        if instruction == "WORKDIR":
            workdir = args
        elif instruction == "COPY" and workdir == "/src":
            *sources, dest = args.split()
            target = src / dest
            for source in sources:
                origin = REPO_ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target / origin.name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path / "wheel"), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = (tmp_path / "wheel").glob("redray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected: set[str] = set()
    for package, directory in (
        ("redray", "redray"),
        ("redray/workers", "workers"),
        ("redray/cli", "cli"),
    ):
        for path in (REPO_ROOT / directory).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                expected.add(f"{package}/{path.relative_to(REPO_ROOT / directory).as_posix()}")
    assert {"redray/cli/main.py", "redray/workers/node.py"} <= expected
    assert any(name.endswith(".lua") for name in expected)
    assert expected <= names, f"missing from the image's package: {sorted(expected - names)}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "redray = redray.cli.main:cli" in text
