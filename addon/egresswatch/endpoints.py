"""The HTTP endpoints beside ``/metrics``: liveness, readiness and the fleet's PAC file.

Orchestrators ask two questions (Kubernetes probes, load balancers, systemd's watchdog):

* **Alive?** ``GET /healthz``: 200 while the proxy's event loop keeps beating
  (:meth:`Health.beat`, called from the loop every second or so); 503 once the last beat is
  older than ``stale_after`` seconds: a wedged loop gets the process restarted.
* **Ready?** ``GET /readyz``: 200 only once every component the proxy needs (the catalogue, the
  policy, the event store) has said it is open (:meth:`Health.set`), 503 with the reasons
  otherwise. A failed reload keeps the old state in force, so it does not make a proxy unready.

Both answer ``text/plain`` with one line per component. ``GET /proxy.pac`` serves a PAC file
when one was configured (:mod:`egresswatch.pac`), as ``application/x-ns-proxy-autoconfig``.

:func:`serve` runs any WSGI application (the metrics exposition, dispatched by :func:`routes`)
in a daemon thread, over HTTPS when a certificate and key are given. The clock is injected.

>>> clock = iter([0.0, 1.0, 100.0]).__next__
>>> h = Health(("catalogue", "store"), clock=clock, stale_after=30)
>>> h.beat()
>>> h.set("catalogue", True)
>>> h.ready()
(False, ['catalogue: ok', 'store: not yet open'])
>>> h.alive()
(True, 'event loop beat 1s ago')
>>> h.alive()
(False, 'event loop beat 100s ago (limit 30s)')
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler
from wsgiref.simple_server import WSGIServer
from wsgiref.simple_server import make_server

__all__ = ["Health", "Route", "routes", "serve"]

# A route answers (HTTP status, content type, body).
Route = Callable[[], tuple[int, str, bytes]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_REASONS = {200: "200 OK", 404: "404 Not Found", 503: "503 Service Unavailable"}


class Health:
    """Liveness (event-loop heartbeat) and readiness (named components) of one proxy."""

    def __init__(
        self,
        components: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        stale_after: float = 30.0,
    ) -> None:
        self._clock = clock
        self._stale_after = stale_after
        self._lock = threading.Lock()
        self._state: dict[str, tuple[bool, str]] = {c: (False, "not yet open") for c in components}
        self._last_beat: float | None = None

    def beat(self) -> None:
        """The event loop is alive (call it from a periodic task on the loop)."""
        self._last_beat = self._clock()

    def set(self, component: str, ok: bool, reason: str = "") -> None:
        """Record whether ``component`` is open; ``reason`` says why not."""
        if component not in self._state:
            raise KeyError(f"unknown component {component!r}")
        with self._lock:
            self._state[component] = (ok, reason or ("ok" if ok else "not open"))

    def ready(self) -> tuple[bool, list[str]]:
        with self._lock:
            items = sorted(self._state.items())
        return all(ok for _, (ok, _) in items), [f"{c}: {why}" for c, (_, why) in items]

    def alive(self) -> tuple[bool, str]:
        if self._last_beat is None:
            return False, "event loop has not started"
        age = self._clock() - self._last_beat
        if age > self._stale_after:
            return False, f"event loop beat {age:.0f}s ago (limit {self._stale_after:.0f}s)"
        return True, f"event loop beat {age:.0f}s ago"

    def liveness_route(self) -> tuple[int, str, bytes]:
        ok, why = self.alive()
        return (200 if ok else 503), "text/plain; charset=utf-8", f"{why}\n".encode()

    def readiness_route(self) -> tuple[int, str, bytes]:
        ok, lines = self.ready()
        body = "".join(f"{line}\n" for line in lines)
        return (200 if ok else 503), "text/plain; charset=utf-8", body.encode()


def routes(
    fallback: WSGIApp,
    *,
    health: Health | None = None,
    pac: str | None = None,
) -> WSGIApp:
    """A WSGI app answering ``/healthz``, ``/readyz`` and ``/proxy.pac`` (when configured) and
    handing every other path to ``fallback`` (the metrics exposition)."""
    table: dict[str, Route] = {}
    if health is not None:
        table["/healthz"] = health.liveness_route
        table["/readyz"] = health.readiness_route
    if pac is not None:
        body = pac.encode()
        table["/proxy.pac"] = lambda: (200, "application/x-ns-proxy-autoconfig", body)
    return _dispatch(table, fallback)


def _dispatch(table: Mapping[str, Route], fallback: WSGIApp) -> WSGIApp:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = table.get(environ.get("PATH_INFO", ""))
        if route is None:
            return fallback(environ, start_response)
        status, ctype, body = route()
        start_response(
            _REASONS.get(status, f"{status} Status"),
            [
                ("Content-Type", ctype),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [b"" if environ.get("REQUEST_METHOD") == "HEAD" else body]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        """Probes every few seconds would flood the log."""


def serve(
    host: str,
    port: int,
    app: WSGIApp,
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``app`` on ``host:port`` (0 picks a free port) in a daemon thread; HTTPS when a
    certificate and key are given. IPv6 literals are accepted as ``::1``."""
    if (certfile is None) != (keyfile is None):
        raise ValueError("TLS needs both a certificate file and a key file")

    class Server(_Server):
        address_family = socket.AddressFamily(_family(host))

    httpd = make_server(host, port, app, Server, handler_class=_QuietHandler)
    if certfile and keyfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certfile, keyfile)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="egresswatch-http", daemon=True)
    thread.start()
    return httpd, thread


def _family(host: str) -> int:
    """The address family ``host`` resolves to first (``::1`` and names such as ``localhost``)."""
    family: int = socket.getaddrinfo(host or None, 0, type=socket.SOCK_STREAM)[0][0]
    return family
