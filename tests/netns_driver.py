"""The driver host's program in tests/test_netns.py, run there as a script.

It connects to the cluster at ``REDRAY_ADDRESS`` and talks to the test in
lines: events on stdout (``NETNS {json}``), the test's go-aheads on stdin.

Every task and actor call records each run of itself in Redis (under
``netns-test:``, outside the cluster's keys) before it does its work, so the
test counts executions server-side, whichever host ran them; the driver
counts the completion notices it is sent per object, as
tests/test_fault_injection.py's ledger does.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from typing import Any

import redis

import redray
from redray.inbox import Inbox

#: where runs are recorded: ``RUNS + str(i)`` (tasks), ``PINGS + str(i)`` (actor calls)
RUNS = "netns-test:runs:"
PINGS = "netns-test:pings:"
#: the workload
TASKS = 200
TASK_SECONDS = 0.05
#: actor calls sent with the workload; each takes long enough that the test
#: can cut the link while one of them runs on the doomed host
PINGS_BEFORE = 8
PING_SECONDS = 0.8
#: actor calls sent once the link is cut
PINGS_AFTER = 6
#: the custom resource only host A's node has
ON_A = "hostA"


def record(key: str) -> str:
    """Append this run (node, task, pid, time) to ``key``; retried until the
    server is reachable, so a run that started is never left unrecorded."""
    ctx = redray.get_runtime_context()
    node = ctx.get_node_id()
    entry = f"{node} {ctx.get_task_id()} {os.getpid()} {time.time():.3f}"
    deadline = time.monotonic() + 120
    while True:
        client = redis.Redis.from_url(
            os.environ["REDRAY_ADDRESS"], socket_timeout=2, socket_connect_timeout=2
        )
        try:
            client.rpush(key, entry)
            return node
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
        finally:
            client.close()


@redray.remote
def work(i: int, seconds: float) -> dict[str, Any]:
    node = record(RUNS + str(i))
    time.sleep(seconds)
    return {"i": i, "node": node, "token": f"t{i}"}


@redray.remote(max_restarts=-1, max_task_retries=-1)
class Keeper:
    def __init__(self) -> None:
        self.node = redray.get_runtime_context().get_node_id()
        self.calls = 0

    def ping(self, i: int, seconds: float) -> dict[str, Any]:
        record(PINGS + str(i))
        self.calls += 1
        time.sleep(seconds)
        return {"i": i, "node": self.node, "calls": self.calls}


def say(event: str, **data: Any) -> None:
    print("NETNS " + json.dumps({"event": event, **data}), flush=True)


def expect(line: str) -> None:
    got = sys.stdin.readline().strip()
    if got != line:
        raise SystemExit(f"driver: expected {line!r} on stdin, got {got!r}")


def main() -> None:
    notices: collections.Counter[str] = collections.Counter()
    handle = Inbox.handle

    def counting(inbox: Inbox, raw: bytes) -> str | None:
        oid = handle(inbox, raw)
        if oid is not None:
            notices[oid] += 1
        return oid

    Inbox.handle = counting  # type: ignore[method-assign, assignment]

    redray.init()  # REDRAY_ADDRESS
    keeper = Keeper.remote()  # type: ignore[attr-defined]
    first = redray.get(keeper.ping.remote(-1, 0), timeout=60)
    say("actor", node=first["node"])

    expect("go")
    refs = [work.remote(i, TASK_SECONDS) for i in range(TASKS)]
    pings = [keeper.ping.remote(i, PING_SECONDS) for i in range(PINGS_BEFORE)]
    say("submitted")

    expect("cut")
    pings += [keeper.ping.remote(i, 0.05) for i in range(PINGS_BEFORE, PINGS_BEFORE + PINGS_AFTER)]
    results = redray.get(refs, timeout=120)
    served = redray.get(pings, timeout=120)
    counts = {ref.hex(): notices[ref.hex()] for ref in refs + pings}
    say("results", results=results, pings=served, notices=counts)

    expect("healed")
    again = redray.get(refs, timeout=60)
    on_a = redray.get(work.options(resources={ON_A: 1}).remote(-1, 0), timeout=90)
    last = redray.get(keeper.ping.remote(len(pings), 0), timeout=60)
    counts = {ref.hex(): notices[ref.hex()] for ref in refs + pings}
    say("after", unchanged=again == results, on_a=on_a, ping=last, notices=counts)
    redray.shutdown()
    say("done")


if __name__ == "__main__":
    main()
