"""A tiny threaded loopback HTTP server that hands each request to a plain function.

Why not a mock transport: the fakes must sit behind real sockets so the real azure-identity / msgraph-sdk /
httpx stacks (connection pooling, Content-Length handling, middleware) run exactly as in production, and so a
fake can drop a connection after acting ("the reply was lost") the way a real network does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

#: Bodies above this are not read at all (the fake answers and closes the connection).
MAX_READ = 200 * 1024 * 1024


@dataclass
class Request:
    """One request as the fake sees it: raw target, decoded query, headers and the whole body."""

    method: str
    target: str  # exactly as sent on the request line (path + query, still percent-encoded)
    path: str  # the target without its query, still percent-encoded
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    content_length: int | None  # None when the client sent no Content-Length (and no chunked body)
    body_too_large: bool = False  # the declared body exceeded MAX_READ and was not read

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without writing any reply

    @classmethod
    def dropped(cls) -> Response:
        return cls(status=0, drop=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    app: Any


class _CutOff(Exception):
    """The connection closed before the body its headers announced had arrived."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real services; every reply carries Content-Length
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (40 ms on Linux), a stall no real service has, and it would dominate every timing measured against us.
    disable_nagle_algorithm = True
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; the fakes keep their own request logs."""

    def _read_body(self) -> tuple[bytes, int | None, bool]:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            total = 0
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_READ:
                    self.close_connection = True
                    return b"", total, True
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _CutOff
                chunks.append(chunk)
                self.rfile.readline()
            body = b"".join(chunks)
            return body, len(body), False
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b"", None, False
        length = int(raw)
        if length > MAX_READ:
            self.close_connection = True
            return b"", length, True
        body = self.rfile.read(length)
        if len(body) < length:
            raise _CutOff
        return body, length, False

    def _dispatch(self) -> None:
        try:
            body, length, too_large = self._read_body()
        except _CutOff:  # the client went away mid-body (a killed worker): no service acts on half a request
            self.close_connection = True
            return
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            target=self.path,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=self.headers,
            body=body,
            content_length=length,
            body_too_large=too_large,
        )
        response: Response = self.server.app(request)
        if response.drop:
            self.close_connection = True
            return
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if response.body and self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch


class BackgroundServer:
    """Owns one `ThreadingHTTPServer` on 127.0.0.1:0 in a daemon thread; subclasses implement `handle`."""

    def __init__(self) -> None:
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Request) -> Response:
        raise NotImplementedError

    def start(self) -> None:
        if self._httpd is not None:
            return
        httpd = _Server(("127.0.0.1", 0), _Handler)
        httpd.app = self.handle
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = None
        self._thread = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it as a context manager or call start()")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
