"""Credentials on the command line: files that hold them, and a head's password.

Secrets never travel in argv (visible in ``ps``): a password comes from a
file or the environment, the cluster secret from ``--secret-file`` or
``REDRAY_SECRET``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from redray.settings import Settings

#: the ACL user a head's clients log in as (redray/acl.py)
CLUSTER_USER = "redray"


def read_file(path: str, option: str) -> str:
    """A credential kept in a file (its surrounding whitespace dropped)."""
    try:
        text = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"could not read {path}: {exc}", param_hint=option) from None
    if not text:
        raise click.BadParameter(f"{path} is empty", param_hint=option)
    return text


def read_secret(secret_file: str | None) -> str | None:
    return None if secret_file is None else read_file(secret_file, "'--secret-file'")


def secret_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--secret-file``; the secret itself comes from REDRAY_SECRET, never
    from a command line."""
    return click.option(
        "--secret-file",
        type=click.Path(exists=True, dir_okay=False),
        envvar="REDRAY_SECRET_FILE",
        help="File holding the cluster secret that signs payloads [default: REDRAY_SECRET, "
        "or the secret of the cluster `redray start` started here].",
    )(fn)


def head_password(password: str | None, password_file: str | None) -> str:
    if password is not None and password_file is not None:
        raise click.UsageError("Pass --password or --password-file, not both.")
    if password_file is not None:
        password = read_file(password_file, "--password-file")
    if password is None:
        return secrets.token_hex(24)
    if not password or any(c.isspace() or c in "\"'" for c in password):
        raise click.BadParameter(
            "the password must be non-empty, without spaces or quotes",
            param_hint="--password/--password-file",
        )
    return password


def shown(address: object) -> str:
    """An address for messages: without its password."""
    try:
        return Settings.from_url(str(address)).display
    except ValueError:
        return "(unreadable address)"
