"""A loopback fake of the Hugging Face Hub API, as huggingface_hub 2.x speaks it.

Endpoints (read from huggingface_hub/hf_api.py and _commit_api.py):
  POST /api/repos/create                         {"name","organization","visibility"} -> {"url"}
  POST /api/models/{ns}/{name}/preupload/{rev}   {"files":[{path,size,sample}]} -> upload modes
  POST /api/models/{ns}/{name}/commit/{rev}      ndjson: header, then {"key":"file"} base64 entries
  GET  /api/models/{ns}/{name}/tree/{rev}        ?recursive= -> [{"type","path","size","oid"}]
  GET  /api/models/{ns}/{name}[/revision/{rev}]  model_info -> {"id","sha","private","siblings"}
  POST /api/validate-yaml                        model card metadata check (commits with README.md)
Every file is declared "regular" (inline base64 in the commit): the fake has no LFS/Xet storage,
which real weights would use. Failures are injected per route with `fail(route, *statuses)`
(each status is answered once, in order) or `fail_always(route, status)`. Binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.loopback import Loopback

_MODEL_ROUTE = re.compile(r"^/api/models/(?P<ns>[^/]+)/(?P<name>[^/]+)(?P<rest>/.*)?$")


@dataclass
class FakeRepo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    sha: str = "0" * 40


@dataclass
class Seen:
    method: str
    path: str
    route: str
    authorization: str
    body: bytes


class FakeHub(Loopback):
    """Start with `with FakeHub(token) as hub:`; `hub.url` is the HF_ENDPOINT to use."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[Seen] = []
        self._once: dict[str, list[int]] = {}
        self._always: dict[str, int] = {}
        self._lock = threading.Lock()
        self._serve(_handler_for(self))

    def fail(self, route: str, *statuses: int) -> None:
        self._once.setdefault(route, []).extend(statuses)

    def fail_always(self, route: str, status: int) -> None:
        self._always[route] = status

    def clear(self, route: str) -> None:
        """Stop injecting failures on `route` (the Hub recovered)."""
        with self._lock:
            self._always.pop(route, None)
            self._once.pop(route, None)

    def injected(self, route: str) -> int | None:
        with self._lock:
            if route in self._always:
                return self._always[route]
            queue = self._once.get(route)
            return queue.pop(0) if queue else None

    def routes(self) -> list[str]:
        return [seen.route for seen in self.requests]

    # --- the API ------------------------------------------------------------------------
    def create(self, body: dict) -> tuple[int, Any]:
        repo_id = f"{body.get('organization') or 'user'}/{body['name']}"
        with self._lock:
            if repo_id in self.repos:
                return 409, {
                    "error": "You already created this model repo",
                    "url": self._repo_url(repo_id),
                }
            self.repos[repo_id] = FakeRepo(private=body.get("visibility", "public") == "private")
        return 200, {"url": self._repo_url(repo_id), "name": repo_id}

    def preupload(self, repo_id: str, body: dict) -> tuple[int, Any]:
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
            for f in body.get("files", [])
        ]
        return 200, {"files": files, "commitOid": self.repos[repo_id].sha}

    def commit(self, repo_id: str, raw: bytes) -> tuple[int, Any]:
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "first line must be the header"}
        repo = self.repos[repo_id]
        for item in lines[1:]:
            if item["key"] != "file":
                return 400, {"error": f"fake hub does not support '{item['key']}' entries"}
            value = item["value"]
            repo.files[value["path"]] = base64.b64decode(value["content"])
        repo.sha = hashlib.sha1(raw).hexdigest()
        return 200, {
            "success": True,
            "commitOid": repo.sha,
            "commitUrl": f"{self._repo_url(repo_id)}/commit/{repo.sha}",
        }

    def tree(self, repo_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        recursive = query.get("recursive", ["False"])[0].lower() in ("true", "1")
        entries, folders = [], set()
        for path, content in sorted(self.repos[repo_id].files.items()):
            if not recursive and "/" in path:
                folders.add(path.split("/", 1)[0])
                continue
            entries.append(
                {
                    "type": "file",
                    "path": path,
                    "size": len(content),
                    "oid": hashlib.sha1(content).hexdigest(),
                }
            )
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)]
        return 200, entries

    def info(self, repo_id: str) -> tuple[int, Any]:
        repo = self.repos[repo_id]
        return 200, {
            "id": repo_id,
            "sha": repo.sha,
            "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        }

    def _repo_url(self, repo_id: str) -> str:
        return f"{self.url}/{repo_id}"


def _route(method: str, path: str) -> tuple[str, str | None]:
    if method == "POST" and path == "/api/repos/create":
        return "create", None
    if method == "POST" and path == "/api/validate-yaml":
        return "validate-yaml", None
    match = _MODEL_ROUTE.match(path)
    if not match:
        return "unknown", None
    repo_id, rest = f"{match['ns']}/{match['name']}", match["rest"] or ""
    for name in ("preupload", "commit", "tree"):
        if rest.startswith(f"/{name}/"):
            return name, repo_id
    if method == "GET" and (rest == "" or rest.startswith("/revision/")):
        return "info", repo_id
    return "unknown", repo_id


def _handler_for(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def _answer(self, status: int, doc: Any) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if status >= 400 and isinstance(doc, dict):
                self.send_header("X-Error-Message", str(doc.get("error", "")))
            self.end_headers()
            self.wfile.write(body)

        def _dispatch(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            route, repo_id = _route(self.command, parts.path)
            auth = self.headers.get("Authorization", "")
            hub.requests.append(Seen(self.command, self.path, route, auth, raw))
            if auth != f"Bearer {hub.token}":
                return self._answer(401, {"error": "Invalid credentials in Authorization header"})
            status = hub.injected(route)
            if status is not None:
                return self._answer(status, {"error": f"injected failure {status} on {route}"})
            if route == "unknown":
                return self._answer(404, {"error": f"no route {self.command} {parts.path}"})
            if repo_id is not None and repo_id not in hub.repos:
                return self._answer(404, {"error": "Repository not found"})
            if route == "create":
                return self._answer(*hub.create(json.loads(raw)))
            if route == "validate-yaml":
                return self._answer(200, {"errors": [], "warnings": []})
            if route == "preupload":
                return self._answer(*hub.preupload(repo_id, json.loads(raw)))
            if route == "commit":
                return self._answer(*hub.commit(repo_id, raw))
            if route == "tree":
                return self._answer(*hub.tree(repo_id, parse_qs(parts.query)))
            return self._answer(*hub.info(repo_id))

        do_GET = do_POST = _dispatch

    return Handler
