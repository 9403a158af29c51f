"""Connection and cluster settings, in one dataclass (arq's ``RedisSettings`` style)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlparse

import redis

from .constants import DEFAULT_PREFIX


@dataclass(frozen=True)
class Settings:
    """Where the cluster's Redis is and how to talk to it.

    ``Settings.from_url("redis://host:6379/0?prefix=redray")`` parses an address;
    ``to_url()`` gives it back, so a settings object can be handed to worker
    processes on their command line.
    """

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    prefix: str = DEFAULT_PREFIX
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
        """Parse ``redis://[user:password@]host:port[/db][?prefix=P]``."""
        if "://" not in url:
            url = "redis://" + url
        parsed = urlparse(url)
        if parsed.scheme not in ("redis", "valkey"):
            raise ValueError(f"unsupported address scheme {parsed.scheme!r} in {url!r}")
        query = parse_qs(parsed.query)
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
        fields.update(overrides)
        return cls(**fields)

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
        url = f"redis://{auth}{host}:{self.port}/{self.db}"
        if self.prefix != DEFAULT_PREFIX:
            url += "?" + urlencode({"prefix": self.prefix})
        return url

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def display(self) -> str:
        """The address without the password, for messages."""
        return f"redis://{self.host}:{self.port}/{self.db}"

    def client(self, *, blocking: bool = False) -> redis.Redis:
        """A client with the retry policy of ``redray/connections.py``:
        retrying (idempotent commands) by default; ``blocking=True`` gives one
        that never retries, for pops and ``connections.blocking_call``."""
        from . import connections

        return connections.single_shot(self) if blocking else connections.client(self)
