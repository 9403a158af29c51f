"""Several hosts on one machine, without Docker: Linux network namespaces
joined by veth pairs to a bridge, for tests that cut one host's link.

    with lab("redis", "a", "b", "driver") as hosts:    # built, and always destroyed
        proc = hosts.popen("a", ["python", ...], env=env, log=path)
        view = hosts.observer("driver")                # a thread inside a host
        view.call(client.ping)                         # its sockets are that host's
        hosts.cut("a")
        hosts.heal("a")

Each host is a namespace of its own with ``lo`` and one interface, ``eth0``,
whose peer is a port of a bridge that lives in a further, dedicated "switch"
namespace: the machine's own network (the root namespace) is never touched,
and the hosts' subnet exists only inside this lab, so it cannot collide with
the machine's networks or with another lab running at the same time.

A *cut* disables the host's bridge port (``bridge link set ... state 0``): the
switch drops every frame to and from the host, silently. The host's link
stays up and nothing answers: no RST, no ICMP, no carrier loss, so the
processes on either side see only silence, the hardest network fault (as when
a switch or a route dies between two machines). ``heal`` puts the port back
to forwarding.

Only iproute2 (``ip``, ``bridge``) is needed, and the right to create
namespaces (root, or CAP_SYS_ADMIN and CAP_NET_ADMIN); ``permitted()`` says
whether this machine gives it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import psutil

T = TypeVar("T")

#: every lab's namespaces are named ``redray-lab-<creator pid>-<run>-<host>``
NS_PREFIX = "redray-lab-"
#: the hosts' subnet: private to the lab's own switch namespace
SUBNET = "10.213.77"
#: bridge port states (``bridge link set ... state N``), as ``ip -d link`` names them
STATES = {"0": "disabled", "3": "forwarding"}
_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")


def run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; CalledProcessError (with its stderr) if it fails and ``check``."""
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def permitted() -> str | None:
    """None if this process may create network namespaces, else why not."""
    for tool in ("ip", "bridge"):
        if shutil.which(tool) is None:
            return f"no `{tool}` binary (iproute2)"
    name = f"{NS_PREFIX}{os.getpid()}-probe-{uuid.uuid4().hex[:6]}"
    done = ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"`ip netns add` is not permitted here: {done.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


def in_ns(ns: str, argv: list[str]) -> list[str]:
    """``argv`` run inside namespace ``ns`` (``ip netns exec`` execs it: same pid)."""
    return ["ip", "netns", "exec", ns, *argv]


def ns_pids(ns: str) -> list[int]:
    done = ip("netns", "pids", ns, check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def kill_ns(ns: str) -> None:
    """SIGKILL every process in ``ns``, wait for them, delete ``ns``."""
    procs = []
    for pid in ns_pids(ns):
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            proc.kill()
            procs.append(proc)
    psutil.wait_procs(procs, timeout=10)
    ip("netns", "del", ns, check=False)


def remove_stale_labs() -> None:
    """Delete the namespaces (and their processes) of labs whose creating
    process is gone: what a test run killed with SIGKILL left behind."""
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        if not entry.name.startswith(NS_PREFIX):
            continue
        creator = entry.name[len(NS_PREFIX) :].split("-", 1)[0]
        if creator.isdigit() and not psutil.pid_exists(int(creator)):
            kill_ns(entry.name)


class Observer:
    """One thread that lives inside a host's namespace: every socket it
    opens, e.g. a redis-py client's, belongs to that host's network, while
    the rest of the process stays where it is. ``call(fn, ...)`` runs ``fn``
    on that thread and returns its result (or raises its exception)."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{ns}", initializer=self._enter
        )

    def _enter(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(_NETNS_DIR / self.ns, os.O_RDONLY)
        try:
            # setns(2) with CLONE_NEWNET moves this thread only
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns into {self.ns}: {os.strerror(err)}")
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)


@dataclass
class Host:
    role: str
    ns: str
    address: str
    #: the host's port on the switch's bridge
    port: str


class Lab:
    """Hosts on one bridge; ``destroy`` always takes everything down."""

    def __init__(self, *roles: str) -> None:
        self.roles = roles
        self.hosts: dict[str, Host] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.observers: list[Observer] = []
        self.logs: list[IO[bytes]] = []
        #: unique per lab: labs running at once, or left over, never collide
        self.run = f"{NS_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.switch = f"{self.run}-switch"

    # -- building and taking down ------------------------------------------------------------
    def build(self) -> Lab:
        remove_stale_labs()
        ip("netns", "add", self.switch)
        sw = ["-n", self.switch]
        ip(*sw, "link", "set", "lo", "up")
        ip(*sw, "link", "add", "br0", "type", "bridge")
        ip(*sw, "link", "set", "br0", "up")
        for index, role in enumerate(self.roles):
            ns = f"{self.run}-{role}"
            host = Host(role, ns, f"{SUBNET}.{10 + index}", f"port{index}")
            ip("netns", "add", ns)
            self.hosts[role] = host
            # the pair is made in the switch and one end moved into the host
            ip(*sw, "link", "add", host.port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            ip(*sw, "link", "set", host.port, "master", "br0")
            ip(*sw, "link", "set", host.port, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def destroy(self) -> None:
        """Kill every process the lab started or that runs in one of its
        namespaces, then delete the namespaces (their veth pairs and the
        bridge go with them). Safe to call twice, and after a failed build."""
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        for observer in self.observers:
            observer.close()
        for host in self.hosts.values():
            kill_ns(host.ns)
        kill_ns(self.switch)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        for log in self.logs:
            log.close()
        self.observers.clear()

    def namespaces(self) -> list[str]:
        return [self.switch, *(h.ns for h in self.hosts.values())]

    # -- using it --------------------------------------------------------------------------------
    def popen(
        self,
        role: str,
        argv: list[str],
        *,
        env: dict[str, str],
        log: Path,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on host ``role``, in a session of its own, its
        stderr (and stdout, unless piped) appended to ``log``."""
        handle = open(log, "ab")  # noqa: SIM115 - closed by destroy()
        self.logs.append(handle)
        proc = subprocess.Popen(
            in_ns(self.hosts[role].ns, argv),
            env=env,
            stdin=stdin,
            stdout=handle if stdout is None else stdout,
            stderr=handle,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def observer(self, role: str) -> Observer:
        """A thread inside host ``role`` (closed by ``destroy``)."""
        observer = Observer(self.hosts[role].ns)
        self.observers.append(observer)
        return observer

    def _port_state(self, role: str, state: str) -> None:
        port = self.hosts[role].port
        # ``bridge`` (iproute2), not ``ip link set ... type bridge_slave state``,
        # which iproute2 6.1 accepts and ignores
        run(["bridge", "-netns", self.switch, "link", "set", "dev", port, "state", state])
        shown = ip("-n", self.switch, "-d", "link", "show", "dev", port).stdout
        assert f"bridge_slave state {STATES[state]} " in shown, shown

    def cut(self, role: str) -> None:
        """Black-hole host ``role``: its bridge port drops everything, silently."""
        self._port_state(role, "0")

    def heal(self, role: str) -> None:
        self._port_state(role, "3")


def server_wrapper(directory: Path, ns: str, binary: str) -> str:
    """An executable that runs the server ``binary`` inside ``ns`` with the
    arguments it is given: ``redray.server.launch_server`` builds them, as for
    any server, and the pid it gets is the server's own (``ip netns exec``
    and ``exec`` replace the process, they do not fork)."""
    path = directory / "server-in-netns"
    command = f"exec ip netns exec {shlex.quote(ns)} {shlex.quote(binary)}"
    path.write_text(f'#!/bin/sh\n{command} "$@"\n')
    path.chmod(0o755)
    return str(path)


@contextlib.contextmanager
def lab(*roles: str) -> Iterator[Lab]:
    """A built lab, destroyed on the way out whatever happened."""
    built = Lab(*roles)
    try:
        yield built.build()
    finally:
        built.destroy()
