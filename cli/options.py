"""Option parsing shared by the commands: node sizes, addresses, output formats."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any

import click

from redray import api
from redray.recovery import NODE_TIMEOUT
from redray.resources import to_units, validate_name
from redray.settings import Settings

from .credentials import read_secret


def _parse_resources(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[str, float]:
    if value is None or not value.strip():
        return {}
    example = 'a JSON object such as \'{"foo": 2, "bar": 0.5}\''
    try:
        data = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not valid JSON ({exc}); pass {example}.") from None
    if not isinstance(data, dict):
        raise click.BadParameter(
            f"{value!r} is a JSON {type(data).__name__}, not an object; pass {example}."
        )
    out: dict[str, float] = {}
    for name, quantity in data.items():
        if name in ("CPU", "GPU"):
            flag = "--num-cpus" if name == "CPU" else "--num-gpus"
            raise click.BadParameter(f"set {name} with {flag}, not in --resources.")
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
            raise click.BadParameter(
                f"the quantity of {name!r} must be a number, got {quantity!r}."
            )
        if not math.isfinite(quantity) or quantity < 0:
            raise click.BadParameter(
                f"the quantity of {name!r} must be a finite number >= 0, got {quantity!r}."
            )
        try:
            validate_name(name)
            to_units(name, quantity)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        out[name] = quantity
    return out


def _check_num_gpus(
    ctx: click.Context, param: click.Parameter, value: float | None
) -> float | None:
    if value is not None and not float(value).is_integer():
        raise click.BadParameter(f"must be a whole number, got {value!r}.")
    return value


def node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options that size a node, shared by ``worker`` and ``start``."""
    options = [
        click.option(
            "--num-cpus",
            type=click.FloatRange(min=0),
            envvar="REDRAY_NUM_CPUS",
            help="CPUs this node offers to tasks [default: the machine's CPU count].",
        ),
        click.option(
            "--num-gpus",
            type=click.FloatRange(min=0),
            envvar="REDRAY_NUM_GPUS",
            callback=_check_num_gpus,
            help="GPUs this node offers [default: those detected].",
        ),
        click.option(
            "--resources",
            envvar="REDRAY_RESOURCES",
            callback=_parse_resources,
            help="Custom resources as a JSON object, e.g. '{\"foo\": 2}'.",
        ),
        click.option(
            "--min-executors",
            type=click.IntRange(min=1),
            envvar="REDRAY_MIN_EXECUTORS",
            help="Executor processes kept running [default: the CPU count, at least 1].",
        ),
        click.option(
            "--max-executors",
            type=click.IntRange(min=1),
            envvar="REDRAY_MAX_EXECUTORS",
            help="Most executor processes [default: max(32, 4 x the minimum)].",
        ),
        click.option(
            "--min-free-memory",
            type=click.FloatRange(min=0),
            envvar="REDRAY_MIN_FREE_MEMORY",
            help="Take no new work while the machine has less memory available: bytes, or a "
            "fraction of its memory if at most 1 [default: 0.05].",
        ),
        click.option(
            "--node-timeout",
            type=click.FloatRange(min=3),
            default=NODE_TIMEOUT,
            envvar="REDRAY_NODE_TIMEOUT",
            help="Seconds without a heartbeat (on the Redis server's clock) after which this "
            "node declares another node dead and recovers its tasks and actors; longer rides "
            f"out longer pauses, shorter recovers sooner [default: {NODE_TIMEOUT:g}].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def check_executors(min_executors: int | None, max_executors: int | None) -> None:
    if min_executors is not None and max_executors is not None and min_executors > max_executors:
        raise click.UsageError(
            f"--min-executors ({min_executors}) is larger than --max-executors ({max_executors})."
        )


def resolve(address: str, option: str = "--address", secret_file: str | None = None) -> Settings:
    """The settings of ``address`` ('auto': the cluster ``redray start``
    started), with the cluster secret (``--secret-file``, REDRAY_SECRET, or
    the one ``redray start`` keeps for the cluster it started here) and, for
    an address without a password, ``REDRAY_PASSWORD``."""
    try:
        resolved = api._resolve_address(address)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from None
    if resolved is None:
        raise click.BadParameter(
            f"{address!r} is not a cluster address; pass redis://host:port or 'auto'.",
            param_hint=f"'{option}'",
        )
    secret = api.resolve_secret(resolved, read_secret(secret_file))
    try:
        settings = Settings.from_url(resolved, secret=secret)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None
    password = os.environ.get("REDRAY_PASSWORD")
    if settings.password is None and password:
        # the address may leave the password out, so that it is not in argv
        settings = settings.replace(password=password)
    return settings


def format_quantity(name: str, value: float) -> str:
    if "memory" in name.lower():
        return f"{value / 2**30:.2f}GiB"
    return f"{value:g}"


def format_resources(resources: dict[str, float]) -> str:
    names = sorted(resources, key=lambda n: (n not in ("CPU", "GPU"), n == "memory", n))
    return ", ".join(f"{n}: {format_quantity(n, resources[n])}" for n in names)
