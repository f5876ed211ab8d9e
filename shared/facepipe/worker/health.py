"""``GET /healthz`` for a worker: 200 while every stage makes progress, 503 when one is stuck,
has failed, or the worker is stopping (so a load balancer or ECS health check stops sending
work and a supervisor can replace a wedged process).

Example:
    >>> server = HealthServer(lambda: (200, {"status": "ok"}), "127.0.0.1", 0)
    >>> server.start(); server.url  # doctest: +SKIP
    'http://127.0.0.1:40123/healthz'
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from facepipe.lifecycle import Service

Report = Callable[[], tuple[int, dict[str, Any]]]


class HealthServer(Service):
    """Serves ``report()`` as JSON on ``GET /healthz`` (anything else: 404), on its own thread."""

    def __init__(self, report: Report, host: str = "127.0.0.1", port: int = 0) -> None:
        self.report = report
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the health server is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/healthz"

    def start(self) -> None:
        report = self.report

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/healthz":
                    self._send(404, {"error": "not_found", "message": "GET /healthz"})
                    return
                status, body = report()
                self._send(status, body)

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a health check every few seconds is not worth a log line

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="worker-health", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
