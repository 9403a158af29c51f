"""Connection and cluster settings, in one dataclass (arq's ``RedisSettings`` style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

import redis

from .constants import DEFAULT_PREFIX

#: address schemes, and whether each means TLS
_SCHEMES = {"redis": False, "valkey": False, "rediss": True, "valkeys": True}
_TLS_PARAMS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS = ("required", "optional", "none")


def _hide_password(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    return url.replace(":" + parsed.password + "@", ":***@", 1)


@dataclass(frozen=True)
class Settings:
    """Where the cluster's Redis is and how to talk to it.

    ``Settings.from_url("redis://host:6379/0?prefix=redray")`` parses an address;
    ``to_url()`` gives it back, so a settings object can be handed to worker
    processes. ``rediss://`` means TLS, with redis-py's query parameters
    ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_cert_reqs``
    (``required``, the default, ``optional`` or ``none``).
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    prefix: str = DEFAULT_PREFIX
    #: Talk TLS to the server (``rediss://``).
    tls: bool = False
    #: CA bundle that signed the server's certificate (default: the system's).
    ssl_ca_certs: str | None = None
    #: This client's certificate and key, for servers that ask for one.
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    #: Whether the server's certificate must verify: required, optional or none.
    ssl_cert_reqs: str = "required"
    #: The cluster secret that signs every payload redray unpickles
    #: (``REDRAY_SECRET``; redray/signing.py). Never part of the address.
    secret: str | None = dataclasses.field(default=None, repr=False)
    #: Seconds to wait for a TCP connection to the server.
    connect_timeout: float = 5.0
    #: Seconds a non-blocking command may take before it counts as failed
    #: (blocking ones time out just after their own block: connections.py).
    socket_timeout: float = 10.0
    #: Seconds an idempotent command keeps being retried while the server is
    #: unreachable before ``ConnectionError`` reaches the caller: a blip
    #: shorter than this is invisible to user code.
    outage_budget: float = 10.0

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Settings:
        """Parse ``redis[s]://[user:password@]host:port[/db][?prefix=P&ssl_...=...]``."""
        if "://" not in url:
            url = "redis://" + url
        parsed = urlparse(url)
        if parsed.scheme not in _SCHEMES:
            raise ValueError(
                f"unsupported address scheme {parsed.scheme!r} in {_hide_password(url)!r} "
                "(use redis:// or rediss:// for TLS)"
            )
        query = parse_qs(parsed.query)
        unknown = sorted(set(query) - {"prefix", *_TLS_PARAMS})
        if unknown:
            raise ValueError(
                f"unknown address parameter(s) {', '.join(unknown)} in {_hide_password(url)!r} "
                f"(known: prefix, {', '.join(_TLS_PARAMS)})"
            )
        db_part = parsed.path.lstrip("/")
        try:
            port = parsed.port or 6379
            db = int(db_part) if db_part else 0
        except ValueError as exc:
            raise ValueError(f"bad port or database number in address {url!r}: {exc}") from None
        fields: dict[str, Any] = {
            "host": parsed.hostname or "127.0.0.1",
            "port": port,
            "db": db,
            "username": unquote(parsed.username) if parsed.username else None,
            "password": unquote(parsed.password) if parsed.password is not None else None,
        }
        if "prefix" in query:
            fields["prefix"] = query["prefix"][0]
        fields["tls"] = _SCHEMES[parsed.scheme]
        for name in _TLS_PARAMS:
            if name in query:
                fields[name] = query[name][0]
        fields.update(overrides)
        settings = cls(**fields)
        if settings.ssl_cert_reqs not in _CERT_REQS:
            raise ValueError(
                f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, "
                f"not {settings.ssl_cert_reqs!r}"
            )
        return settings

    def to_url(self) -> str:
        """The address as a URL that ``from_url`` parses back to equal settings."""
        auth = ""
        if self.username is not None:
            auth = quote(self.username, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        if auth:
            auth += "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        url = f"{self.scheme}://{auth}{host}:{self.port}/{self.db}"
        params: dict[str, str] = {}
        if self.prefix != DEFAULT_PREFIX:
            params["prefix"] = self.prefix
        if self.tls:
            for name in _TLS_PARAMS:
                value = getattr(self, name)
                if value is not None and not (name == "ssl_cert_reqs" and value == "required"):
                    params[name] = value
        if params:
            url += "?" + urlencode(params)
        return url

    @property
    def scheme(self) -> str:
        return "rediss" if self.tls else "redis"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def display(self) -> str:
        """The address without the password, for messages."""
        return f"{self.scheme}://{self.host}:{self.port}/{self.db}"

    def client(self, *, blocking: bool = False) -> redis.Redis:
        """A client with the retry policy of ``redray/connections.py``:
        retrying (idempotent commands) by default; ``blocking=True`` gives one
        that never retries, for pops and ``connections.blocking_call``."""
        from . import connections

        return connections.single_shot(self) if blocking else connections.client(self)
