"""A local HTTP server standing in for WeChat Work's webhook and Twilio's API (real sockets).

`StubServer` records every request (method, path, query, headers, body) and
answers with the next scripted `Answer` (the last one repeats), or with what
`respond(request)` says when that is given and says anything. An answer
can stall (`stall=True`: it waits until the server is closed, so a client's
timeout is the only way out) or drop the connection without a word.
"""
from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b'{"errcode":0,"errmsg":"ok"}'
    content_type: str = "application/json"
    stall: bool = False  # never answer (until the server closes)
    drop: bool = False  # close the connection without answering

    @staticmethod
    def json(value: Any, status: int = 200) -> "Answer":
        return Answer(status, json.dumps(value).encode())


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode())


@dataclass
class StubServer:
    answers: list[Answer] = field(default_factory=lambda: [Answer()])
    requests: list[Request] = field(default_factory=list)
    respond: Callable[[Request], Answer | None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._arrived = threading.Condition(self._lock)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                answer = stub._record(Request(self.command, parts.path, parse_qs(parts.query),
                                              dict(self.headers.items()), body))
                if answer.stall:
                    stub._closing.wait(30)
                    self.close_connection = True
                    return
                if answer.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_POST = do_GET = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="stub-http",
                                        daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, request: Request) -> Answer:
        with self._arrived:
            self.requests.append(request)
            answer = self.respond(request) if self.respond is not None else None
            if answer is None:
                answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            self._arrived.notify_all()
            return answer

    def script(self, *answers: Answer) -> None:
        """Answer the next requests with these (counting from the ones seen so far)."""
        with self._lock:
            self.answers = [*([Answer()] * len(self.requests)), *answers]

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Request]:
        """Until `count` requests have arrived (or the timeout); the requests so far."""
        with self._arrived:
            self._arrived.wait_for(lambda: len(self.requests) >= count, timeout_s)
            return list(self.requests)

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


def refused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
