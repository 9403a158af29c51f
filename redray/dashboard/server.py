"""The dashboard's HTTP server: the page, its JSON endpoints, access control.

The standard library's ``ThreadingHTTPServer``: the dashboard serves a few
small files and JSON documents to a handful of people, which needs no
framework and no new dependency. Every response carries a strict
Content-Security-Policy (scripts from this server only, none inline) and
``X-Content-Type-Options: nosniff``; the page renders data as text only.

Cluster state is user data (task names, arguments in errors), so a server
bound to anything but a loopback address must have a token; with a token
every request needs it, as HTTP Basic auth (any user name, the token as
password) or ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import logging
import socket
import socketserver
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from redray.constants import DASHBOARD_HOST, DASHBOARD_PORT
from redray.settings import Settings

from .endpoints import ENDPOINTS
from .reader import ClusterReader, ClusterUnreachable

log = logging.getLogger(__name__)

DEFAULT_HOST = DASHBOARD_HOST
DEFAULT_PORT = DASHBOARD_PORT

STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    """True for an address only this machine can reach (``localhost`` too)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "redray-dashboard"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if not self._authorized():
            return
        path = urlsplit(self.path).path
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(HTTPStatus.OK, _static(name), content_type)
        elif path == "/healthz":
            self._json(HTTPStatus.OK, {"ok": True})
        elif path in ENDPOINTS:
            endpoint = ENDPOINTS[path]
            reader = self.server.reader
            try:
                data = reader.read(lambda rt: endpoint(reader, rt))
            except ClusterUnreachable as exc:
                self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
                return
            except Exception:  # noqa: BLE001 - one bad read must not take the page down
                log.exception("reading %s failed", path)
                self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"reading {path} failed"})
                return
            self._json(HTTPStatus.OK, data)
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        given = b""
        if scheme.lower() == "bearer":
            given = value.strip().encode()
        elif scheme.lower() == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except (binascii.Error, ValueError):
                given = b""
        if given and hmac.compare_digest(given, token.encode()):
            return True
        body = json.dumps({"error": "this dashboard needs its token"}).encode()
        self.send_response(HTTPStatus.UNAUTHORIZED)
        self.send_header("WWW-Authenticate", 'Basic realm="redray dashboard", charset="UTF-8"')
        self._headers("application/json", len(body))
        self.wfile.write(body)
        return False

    def _json(self, status: HTTPStatus, data: Any) -> None:
        self._send(status, json.dumps(data, default=str).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self._headers(content_type, len(body))
        self.wfile.write(body)

    def _headers(self, content_type: str, length: int) -> None:
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class DashboardServer(ThreadingHTTPServer):
    """The dashboard of the cluster at ``settings``, on ``host:port`` (0: a free port).

    ``serve_forever()`` serves until ``stop()``; ``close()`` then frees the
    port and disconnects the dashboard's driver."""

    daemon_threads = True

    def __init__(
        self, settings: Settings, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
        token: str | None = None,
    ) -> None:  # fmt: skip
        if not token and not is_loopback(host):
            raise ValueError(
                f"refusing to serve the dashboard on {host} without a token: cluster state is "
                "user data; set REDRAY_DASHBOARD_TOKEN (or --token), or bind to 127.0.0.1."
            )
        self.token = token or None
        self.reader = ClusterReader(settings)
        self.address_family = _family(host)
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks the host's FQDN up (reverse DNS), which can
        # take seconds in a container without a resolver; nothing here uses it
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = host.decode() if isinstance(host, bytes) else str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}/"

    def stop(self) -> None:
        """Make ``serve_forever()`` return; safe from a signal handler (it
        must not wait for the loop it runs in)."""
        threading.Thread(target=self.shutdown, daemon=True).start()

    def close(self) -> None:
        self.server_close()
        self.reader.close()


def _family(host: str) -> socket.AddressFamily:
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return socket.AF_INET
