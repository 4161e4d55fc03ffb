"""A loopback HTTP server that records every request and answers from a script.

Used as a fake webhook receiver and as a fake provider API (Vast.ai / RunPod DELETE calls).
`answers` is consumed in order; when empty, `default` answers. `on_request(seen)` runs before
the answer (a test can look at the disk at the moment the request arrives). Binds 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from fakes.loopback import Loopback


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Recorder(Loopback):
    def __init__(
        self,
        answers: list[tuple[int, Any]] | None = None,
        default: tuple[int, Any] = (200, {"success": True}),
        on_request: Callable[[Recorded], None] | None = None,
    ) -> None:
        self.answers = list(answers or [])
        self.default = default
        self.on_request = on_request
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._serve(self._handler())

    def _next(self) -> tuple[int, Any]:
        with self._lock:
            return self.answers.pop(0) if self.answers else self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                seen = Recorded(self.command, self.path, dict(self.headers.items()), body)
                recorder.requests.append(seen)
                if recorder.on_request is not None:
                    recorder.on_request(seen)
                status, doc = recorder._next()
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        return Handler
