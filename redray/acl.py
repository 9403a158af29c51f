"""Least privilege: the Redis ACL user a redray cluster needs, and no more.

A cluster's clients touch only keys and channels under its prefix's hash tag
(``{prefix}:...``, see ``constants.Keys``) and only the commands below, which
are every command redray sends and every command its Lua scripts call
(scripts run with their caller's permissions). Several clusters on one
server (``?prefix=``) can each have their own user, and one cluster's
clients then cannot read or write another's keys.

``redray acl --prefix P`` prints the ``ACL SETUSER`` line for a server you
run; ``redray start --head`` writes the same rules into its server's
configuration, so they survive a restart of the server.
"""

from __future__ import annotations

#: Every command redray's clients and scripts run (keep sorted; the ACL test
#: runs a cluster's whole life under exactly these).
COMMANDS = (
    "blpop", "del", "discard", "eval", "evalsha", "exec", "exists", "expire", "get", "hdel",
    "hexists", "hget", "hgetall", "hincrby", "hkeys", "hmget", "hscan", "hset", "hsetnx",
    "hstrlen", "hvals", "incr", "incrby", "llen", "lpop", "lpush", "lrange", "ltrim", "multi",
    "pexpire", "ping", "publish", "rename", "rpush", "sadd", "script|exists", "script|load",
    "select", "set", "sismember", "smembers", "spop", "srandmember", "srem", "subscribe", "time",
    "unlink", "unsubscribe", "xack", "xadd", "xclaim", "xdel", "xgroup|create",
    "xgroup|createconsumer", "xgroup|delconsumer", "xgroup|destroy", "xpending", "xrange", "xread",
    "xreadgroup", "xrevrange", "zadd", "zcard", "zlexcount", "zrange", "zrangebylex",
    "zrangebyscore", "zrem",
)  # fmt: skip

_GLOB = "*?[]\\"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB else c for c in text)


def rules(prefix: str, password: str) -> list[str]:
    """The ACL rules of a cluster user: on, its password, its prefix's keys
    and channels, redray's commands."""
    if any(c.isspace() for c in password):
        raise ValueError("an ACL password may not contain whitespace")
    pattern = _glob_escape("{" + prefix + "}") + ":*"
    return [
        "reset",
        "on",
        ">" + password,
        "~" + pattern,
        "&" + pattern,
        "-@all",
        *("+" + c for c in COMMANDS),
    ]


def setuser_line(user: str, prefix: str, password: str = "<password>") -> str:
    """``ACL SETUSER`` as typed in redis-cli."""
    return " ".join(["ACL SETUSER", user, *rules(prefix, password)])


def config_line(user: str, prefix: str, password: str) -> str:
    """The same user as a ``user`` directive of a server's config file."""
    # "reset" is not needed (nor accepted by every server) at load time
    return " ".join(["user", user, *rules(prefix, password)[1:]])
