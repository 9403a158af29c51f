"""Settings: parsing and printing cluster addresses (pure logic)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redray.constants import DEFAULT_PREFIX
from redray.settings import Settings


def test_from_url_full() -> None:
    s = Settings.from_url("redis://alice:s3cret@example.com:7000/3?prefix=team1")
    assert (s.host, s.port, s.db) == ("example.com", 7000, 3)
    assert (s.username, s.password, s.prefix) == ("alice", "s3cret", "team1")


def test_from_url_defaults() -> None:
    s = Settings.from_url("redis://example.com")
    assert (s.host, s.port, s.db) == ("example.com", 6379, 0)
    assert s.username is None and s.password is None
    assert s.prefix == DEFAULT_PREFIX


def test_from_url_without_scheme() -> None:
    s = Settings.from_url("10.0.0.5:6380")
    assert (s.host, s.port, s.db) == ("10.0.0.5", 6380, 0)


def test_from_url_password_only_and_valkey_scheme() -> None:
    s = Settings.from_url("valkey://:pw@h:1/0")
    assert s.username is None and s.password == "pw"
    assert s.to_url() == "redis://:pw@h:1/0"


def test_from_url_overrides() -> None:
    s = Settings.from_url("redis://h:1/2?prefix=p", prefix="other", socket_timeout=3.0)
    assert s.prefix == "other" and s.socket_timeout == 3.0 and s.db == 2


@pytest.mark.parametrize("url", ["http://h:1", "unix:///tmp/redis.sock", "ftp://x"])
def test_from_url_bad_scheme(url: str) -> None:
    with pytest.raises(ValueError, match="scheme"):
        Settings.from_url(url)


@pytest.mark.parametrize("url", ["redis://h:notaport", "redis://h:1/notadb"])
def test_from_url_bad_port_or_db(url: str) -> None:
    with pytest.raises(ValueError):
        Settings.from_url(url)


def test_to_url() -> None:
    assert Settings().to_url() == "redis://127.0.0.1:6379/0"
    s = Settings(host="h", port=1, db=2, username="u", password="p", prefix="x")
    assert s.to_url() == "redis://u:p@h:1/2?prefix=x"


@pytest.mark.parametrize(
    "s",
    [
        Settings(),
        Settings(host="example.com", port=7000, db=5),
        Settings(password="pw"),
        Settings(username="alice", password="pw", prefix="team-1"),
        Settings(host="10.1.2.3", prefix="a.b_c"),
        Settings(tls=True),
        Settings(tls=True, password="pw", ssl_ca_certs="/etc/ca dir/ca.pem", ssl_cert_reqs="none"),
        Settings(tls=True, ssl_certfile="/c.pem", ssl_keyfile="/k.pem", prefix="p"),
    ],
)
def test_url_round_trip(s: Settings) -> None:
    assert Settings.from_url(s.to_url()) == s


plain = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~",
    min_size=1,
    max_size=16,
)


@settings(max_examples=200, deadline=None)
@given(
    host=st.sampled_from(["127.0.0.1", "localhost", "redis.internal", "10.0.0.1"]),
    port=st.integers(1, 65535),
    db=st.integers(0, 15),
    username=st.none() | plain,
    password=plain,
    prefix=plain,
)
def test_url_round_trip_plain_values(
    host: str, port: int, db: int, username: str | None, password: str, prefix: str
) -> None:
    s = Settings(host=host, port=port, db=db, username=username, password=password, prefix=prefix)
    assert Settings.from_url(s.to_url()) == s


# Worker processes receive their settings as ``to_url()`` on the command line, so
# any value to_url cannot carry through from_url breaks every node of the cluster.


@pytest.mark.parametrize("password", ["pa/ss", "p#w", "p?w", "p%40w", "p w", "p@w:x"])
def test_url_round_trip_password_with_special_characters(password: str) -> None:
    s = Settings(username="u", password=password)
    assert Settings.from_url(s.to_url()) == s


def test_from_url_decodes_percent_encoded_password() -> None:
    # the standard (and redis-py's) way to write '@' or '/' in a URL password
    s = Settings.from_url("redis://user:p%40ss%2Fword@h:1/0")
    assert s.password == "p@ss/word"


def test_url_round_trip_username_without_password() -> None:
    s = Settings(username="alice")  # an ACL user with 'nopass'
    assert Settings.from_url(s.to_url()) == s


def test_url_round_trip_ipv6_host() -> None:
    s = Settings.from_url("redis://[::1]:6380/0")
    assert s.host == "::1" and s.port == 6380
    assert Settings.from_url(s.to_url()) == s


@pytest.mark.parametrize("prefix", ["a+b", "a&b", "a#b", "a%20b"])
def test_url_round_trip_prefix_with_special_characters(prefix: str) -> None:
    s = Settings(prefix=prefix)
    assert Settings.from_url(s.to_url()) == s


def test_display_hides_password() -> None:
    s = Settings(host="h", port=1, db=2, username="u", password="hunter2")
    assert "hunter2" not in s.display
    assert "h:1" in s.display
    assert "hunter2" in s.to_url()


def test_replace() -> None:
    s = Settings(host="h")
    t = s.replace(port=99)
    assert (t.host, t.port) == ("h", 99) and s.port == 6379


def test_client_uses_settings() -> None:
    s = Settings(host="h", port=1, db=2, username="u", password="p")
    client = s.client()
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 1, 2)
    assert (kwargs["username"], kwargs["password"]) == ("u", "p")
    assert kwargs["socket_timeout"] == s.socket_timeout


def test_the_default_client_retries_for_the_outage_budget_and_the_blocking_one_never() -> None:
    from redray.connections import BudgetRetry

    s = Settings(outage_budget=7.0)
    retry = s.client().get_retry()
    assert isinstance(retry, BudgetRetry) and retry.budget == 7.0
    single = s.client(blocking=True)
    assert not isinstance(single.get_retry(), BudgetRetry)
    # a blocking call bounds its own socket; the client's timeout is for the rest
    assert single.connection_pool.connection_kwargs["socket_timeout"] == s.socket_timeout


def test_rediss_means_tls_with_redis_py_query_parameters() -> None:
    s = Settings.from_url(
        "rediss://:pw@h:6380/0?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem"
        "&ssl_cert_reqs=optional"
    )
    assert s.tls and s.password == "pw"
    assert (s.ssl_ca_certs, s.ssl_certfile, s.ssl_keyfile, s.ssl_cert_reqs) == (
        "/ca.pem",
        "/c.pem",
        "/k.pem",
        "optional",
    )
    assert s.display == "rediss://h:6380/0"


def test_an_unknown_address_parameter_is_a_clear_error_that_hides_the_password() -> None:
    with pytest.raises(ValueError, match="ssl_ca_cert") as info:
        Settings.from_url("rediss://:secret@h:1/0?ssl_ca_cert=/ca.pem")
    assert "secret" not in str(info.value)


def test_a_bad_ssl_cert_reqs_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="ssl_cert_reqs"):
        Settings.from_url("rediss://h:1/0?ssl_cert_reqs=maybe")
