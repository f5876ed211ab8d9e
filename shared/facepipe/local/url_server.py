"""A Lambda Function URL on 127.0.0.1: HTTP request → payload-2.0 event → function → HTTP response.

What Lambda does in front of a function with a Function URL, for local use:

* every request (any method, any path) becomes the event
  :func:`~facepipe.local.events.function_url_event` builds: headers (lower-cased, repeated ones
  joined with commas, cookies as ``cookies``), raw query string, method, path and body; a body
  whose content type is not text (or not UTF-8) is base64-encoded with ``isBase64Encoded``;
* a body over 6 MB (6,291,456 bytes, Lambda's synchronous payload limit) is answered 413
  without invoking the function, and so is a request whose event is over 6 MB (a binary body
  grows by a third once base64-encoded);
* the function's answer is mapped back: ``statusCode``/``headers``/``cookies``/``body``/
  ``isBase64Encoded``; an answer without ``statusCode`` (or not an object) is a 200 whose
  JSON body is the answer; a function error is a 502 ``{"message": "Internal Server Error"}``.

Not emulated: the ``AWS_IAM`` auth type (signed and unsigned requests are both accepted), CORS,
response streaming, and the function's concurrency limit.

Example:
    >>> with FunctionUrlServer(invoker) as server:  # doctest: +SKIP
    ...     urllib.request.urlopen(server.url).status
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from facepipe.lifecycle import Service
from facepipe.local.events import function_url_event
from facepipe.local.invokers import Invoker
from facepipe.local.rie import function_error
from facepipe.messages import BODY_TOO_LARGE_ADVICE

MAX_BODY_BYTES = 6_291_456  # Lambda's synchronous invocation payload limit (6 MB)
_DISCARD_LIMIT = 64 * 1024 * 1024  # larger bodies are not read at all: the connection closes
_TEXT_TYPES = {
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-www-form-urlencoded",
    "application/graphql",
}
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive"}
_log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """The request body is over the limit (``size`` is what is known of it)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def is_text(content_type: str | None, body: bytes) -> bool:
    """Whether Lambda passes ``body`` as text (else it base64-encodes it)."""
    if not content_type:
        return not body
    mime = content_type.split(";", 1)[0].strip().lower()
    textual = mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))
    if not textual:
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def http_response(payload: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """The function's answer as (status, headers, body), the way a Function URL maps it."""
    if function_error(payload) is not None:
        return _json(502, {"message": "Internal Server Error"})
    if not isinstance(payload, dict) or "statusCode" not in payload:
        return _json(200, payload)
    try:
        status = int(payload["statusCode"])
        if not 100 <= status <= 599:
            raise ValueError(status)
        headers = [(str(k), str(v)) for k, v in (payload.get("headers") or {}).items()]
        headers += [("set-cookie", str(c)) for c in payload.get("cookies") or []]
        body = payload.get("body")
        if body is None:
            raw = b""
        elif payload.get("isBase64Encoded"):
            raw = base64.b64decode(str(body), validate=True)
        else:
            raw = (body if isinstance(body, str) else json.dumps(body)).encode()
    except (TypeError, ValueError, AttributeError, binascii.Error):
        # Lambda answers a malformed function response with a 502 as well.
        return _json(502, {"message": "Internal Server Error"})
    return status, [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP], raw


def _json(status: int, body: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [("content-type", "application/json")], json.dumps(body).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    invoker: Invoker
    max_body_bytes: int


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "facepipe-local"
    timeout = 60  # a client that stops sending mid-request does not hold its thread for ever

    def do_any(self) -> None:
        start = time.perf_counter()
        try:
            body = self._read_body()
        except BodyTooLarge as exc:
            self.close_connection = True
            self._send(*self._too_large(f"the request body is {exc.size} bytes"), start)
            return
        except (ValueError, OSError) as exc:
            self.close_connection = True
            self._send(*_json(400, {"message": f"Bad Request: {exc}"}), start)
            return
        url = urlsplit(self.path)
        request_headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            known = request_headers.get(key)
            request_headers[key] = f"{known},{value}" if known is not None else value
        text = is_text(request_headers.get("content-type"), body)
        event = function_url_event(
            body,
            method=self.command,
            path=url.path or "/",
            query=url.query,
            headers=request_headers,
            is_base64=not text,
            source_ip=self.client_address[0],
        )
        event_size = len(json.dumps(event))
        if event_size > self.server.max_body_bytes:  # e.g. a binary body, once base64-encoded
            message = f"the request is {event_size} bytes as a Lambda event"
            self._send(*self._too_large(message), start)
            return
        payload = self.server.invoker.invoke(event)
        status, out_headers, raw = http_response(payload)
        out_headers.append(("x-amzn-requestid", event["requestContext"]["requestId"]))
        self._send(status, out_headers, raw, start)

    # BaseHTTPRequestHandler dispatches on do_<METHOD>: every method goes to the function.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_any  # noqa: N815

    def _too_large(self, what: str) -> tuple[int, list[tuple[str, str]], bytes]:
        limit = self.server.max_body_bytes
        return _json(
            413,
            {
                "error": "payload_too_large",
                "message": f"{what}; a Function URL passes at most {limit} bytes (6 MB) to the "
                f"function: {BODY_TOO_LARGE_ADVICE}",
            },
        )

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked(limit)
        length = int(self.headers.get("content-length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        if length > limit:
            if length <= _DISCARD_LIMIT:  # read it, so the client sees the 413, not a reset
                self._discard(length)
            raise BodyTooLarge(length)
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes:
        parts, size = [], 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise ValueError("truncated chunked body")
            chunk = int(line.split(b";", 1)[0].strip(), 16)
            if chunk == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            size += chunk
            if size > _DISCARD_LIMIT:
                raise BodyTooLarge(size)
            data = self.rfile.read(chunk)
            self.rfile.readline(1024)  # the chunk's CRLF
            if size <= limit:
                parts.append(data)  # past the limit, read on (and drop) to answer 413
        if size > limit:
            raise BodyTooLarge(size)
        return b"".join(parts)

    def _discard(self, length: int) -> None:
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(remaining, 1 << 20))
            if not data:
                break
            remaining -= len(data)

    def _send(self, status: int, headers: list[tuple[str, str]], raw: bytes, start: float) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(raw)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)
        elapsed = (time.perf_counter() - start) * 1000
        _log.info("%s %s → %d (%.0f ms)", self.command, self.path, status, elapsed)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s " + format, self.client_address[0], *args)


class FunctionUrlServer(Service):
    """The Function URL of ``invoker`` at ``http://127.0.0.1:<port>/`` (0: any free port).

    Args:
        invoker: the function behind the URL (the detection function).
        port: TCP port on 127.0.0.1; 0 picks a free one (see :attr:`url` after start).
        max_body_bytes: larger request bodies are answered 413 without invoking.
    """

    def __init__(
        self, invoker: Invoker, port: int = 0, *, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self.invoker = invoker
        self.port = port
        self.max_body_bytes = max_body_bytes
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.invoker = self.invoker
        server.max_body_bytes = self.max_body_bytes
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="function-url",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting requests and close the port (requests in flight finish on their
        daemon threads)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
