"""A loopback HTTP server serving fixture lists to ``egresswatch lists update`` tests.

``ListServer.route(path, *responses)`` sets what ``GET path`` answers: the responses in turn, the
last one repeated (so ``route("/x", Reply(503), Reply(200, b"..."))`` fails once, then serves).
``hits[path]`` counts the requests. Never reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0  # seconds before the status line
    headers: dict[str, str] = field(default_factory=dict)
    length: bool = True  # send Content-Length (else: close-delimited body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        reply = self.server.owner.next_reply(self.path)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            for k, v in reply.headers.items():
                self.send_header(k, v)
            if reply.length:
                self.send_header("Content-Length", str(len(reply.body)))
            else:
                self.close_connection = True
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ListServer


class ListServer:
    def __init__(self) -> None:
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.hits: Counter[str] = Counter()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def start(self) -> ListServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def route(self, path: str, *replies: Reply) -> str:
        with self._lock:
            self._routes[path] = list(replies)
        return self.url(path)

    def serve(self, path: str, body: bytes | str) -> str:
        return self.route(path, Reply(200, body.encode() if isinstance(body, str) else body))

    def next_reply(self, path: str) -> Reply:
        with self._lock:
            self.hits[path] += 1
            replies = self._routes.get(path)
            if not replies:
                return Reply(404, b"not found")
            return replies.pop(0) if len(replies) > 1 else replies[0]
