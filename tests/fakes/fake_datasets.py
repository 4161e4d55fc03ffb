"""A loopback fake of the two Hub endpoints that reading a dataset split uses:
GET /api/datasets/{ns}/{name}/tree/{rev} (the file listing) and HEAD/GET
/datasets/{ns}/{name}/resolve/{rev}/{path} (metadata headers and the file itself)."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote, urlparse

from fakes.loopback import Loopback

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeDatasets(Loopback):
    def __init__(self, files: dict[str, dict[str, bytes]]) -> None:
        self.files = files  # repo id -> path -> content
        self.requests: list[str] = []
        self._serve(_handler(self))


def _handler(fake: FakeDatasets) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _route(self, head: bool) -> None:
            path = unquote(urlparse(self.path).path)
            fake.requests.append(f"{self.command} {path}")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "tree":
                repo = "/".join(parts[2:4])
                if repo not in fake.files:
                    return self._send(
                        404,
                        b'{"error": "Repository not found"}',
                        {"X-Error-Code": "RepoNotFound"},
                        head,
                    )
                listing = [
                    {
                        "type": "file",
                        "path": name,
                        "size": len(data),
                        "oid": hashlib.sha1(data).hexdigest(),
                    }
                    for name, data in fake.files[repo].items()
                ]
                return self._send(
                    200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, head
                )
            if parts[:1] == ["datasets"] and len(parts) >= 6 and parts[3] == "resolve":
                repo, name = "/".join(parts[1:3]), "/".join(parts[5:])
                data = fake.files.get(repo, {}).get(name)
                if data is None:
                    return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"}, head)
                etag = hashlib.sha256(data).hexdigest()
                return self._send(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{etag}"'}, head)
            return self._send(404, b"{}", {}, head)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self._route(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._route(head=True)

    return Handler
