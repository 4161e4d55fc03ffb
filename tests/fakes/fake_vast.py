"""A loopback HTTP server that answers like Vast.ai's REST API v0 (payload shapes from the
public API reference), plus the small threaded-server base the RunPod fake shares.

Requests are recorded (method, path, query, headers, JSON body). `fail_queue` holds scripted
error answers served before normal handling (nothing is carried out); `lost_queue` holds
answers served AFTER normal handling, in place of its answer (the request was carried out and
the answer lost: a 502 from a proxy after the create); `search_script` scripts successive
offer lists. `created` lists what the creates made.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.loopback import Loopback


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None  # sent as-is (event streams, log files)


class LoopbackServer(Loopback):
    """Runs `route(Recorded) -> Reply` on 127.0.0.1 in a thread; use as a context manager.

    With `provider` set, every request is first held against that provider's published
    schema (fakes/provider_schemas.py): a request the real service would refuse is refused
    the provider's way (`refuse`), recorded in `violations`, and fails the test when the
    server closes unless the test set `allow_violations`."""

    provider: str | None = None
    allow_violations = False

    def refuse(self, problems: list[str]) -> Reply:
        return Reply(400, {"error": "invalid request", "problems": problems})

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        if exc[0] is None and self.violations and not self.allow_violations:
            raise AssertionError(
                f"requests the {self.provider} API would refuse: {self.violations}"
            )

    def __init__(self, route: Callable[[Recorded], Reply]) -> None:
        self.violations: list[tuple[str, str, list[str]]] = []
        self.requests: list[Recorded] = []
        self.fail_queue: list[Reply] = []
        self.lost_queue: list[Reply] = []
        self.created: list[Any] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                rec = Recorded(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                outer.requests.append(rec)
                problems = outer._check(rec)
                if problems:
                    outer.violations.append((rec.method, rec.path, problems))
                    reply = outer.refuse(problems)
                else:
                    reply = outer.fail_queue.pop(0) if outer.fail_queue else route(rec)
                if outer.lost_queue and not outer.fail_queue and reply.status < 400:
                    reply = outer.lost_queue.pop(0)
                data = (
                    reply.raw
                    if reply.raw is not None
                    else (b"" if reply.body is None else json.dumps(reply.body).encode())
                )
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                if "Content-Type" not in reply.headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":  # a HEAD answer has headers only
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._serve(Handler)

    def _check(self, rec: Recorded) -> list[str]:
        if self.provider is None or rec.headers.get("authorization") is None:
            return []  # unauthenticated calls (the log link) have no schema
        from fakes.provider_schemas import violations

        return violations(self.provider, rec.method, rec.path, rec.query, rec.body)

    def calls(self, method: str, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]


VAST_KEY = "vast-test-key-0123456789abcdef"


def vast_offer(
    offer_id: int, price: float, gpu: str = "A100 SXM4", ram_mb: int = 81920
) -> dict[str, Any]:
    return {
        "id": offer_id,
        "ask_contract_id": offer_id,
        "gpu_name": gpu,
        "num_gpus": 1,
        "gpu_ram": ram_mb,
        "dph_total": price,
        "reliability": 0.995,
        "inet_down": 900.0,
        "disk_space": 500.0,
        "cpu_ram": 257000,
        "cuda_max_good": 12.9,
        "geolocation": "Sweden, SE",
        "rentable": True,
        "verified": True,
    }


class FakeVast(LoopbackServer):
    PREFIX = "/api/v0"
    provider = "vast"

    def refuse(self, problems: list[str]) -> Reply:
        return Reply(400, {"success": False, "error": "invalid_args", "msg": "; ".join(problems)})

    def __init__(self, key: str = VAST_KEY) -> None:
        self.key = key
        self.offers: list[dict[str, Any]] = [vast_offer(101, 1.45), vast_offer(102, 1.10)]
        self.search_script: list[list[dict[str, Any]]] = []  # consumed per search if non-empty
        self.instance: dict[str, Any] = {
            "id": 555,
            "actual_status": "running",
            "cur_state": "running",
            "gpu_name": "A100 SXM4",
            "dph_total": 1.12,
            "label": "heretic-x",
            "status_msg": "",
            "extra_env": [["HF_TOKEN", "hf_s"]],
        }
        self.log_misses = 1  # 404s served on the log link before the text
        self.log_text = "heretic: trial 3/200\n"
        super().__init__(self.route)

    @property
    def base(self) -> str:
        return self.url + self.PREFIX

    def route(self, r: Recorded) -> Reply:
        if r.path.startswith("/logs/"):
            if "authorization" in r.headers:
                return Reply(400, {"error": "unexpected credentials"})
            if self.log_misses > 0:
                self.log_misses -= 1
                return Reply(
                    404,
                    raw=b"<Error>NoSuchKey</Error>",
                    headers={"Content-Type": "application/xml"},
                )
            return Reply(200, raw=self.log_text.encode(), headers={"Content-Type": "text/plain"})
        if r.headers.get("authorization") != f"Bearer {self.key}":
            return Reply(
                401, {"success": False, "error": "invalid_user_key", "msg": "Invalid user key"}
            )
        path = r.path.removeprefix(self.PREFIX)
        if r.method == "POST" and path == "/bundles/":
            offers = self.search_script.pop(0) if self.search_script else self.offers
            ordered = sorted(offers, key=lambda o: o["dph_total"])
            return Reply(200, {"offers": ordered})
        if r.method == "PUT" and path.startswith("/asks/"):
            self.created.append(7777 + len(self.created))
            return Reply(200, {"success": True, "new_contract": self.created[-1]})
        if r.method == "PUT" and path.startswith("/instances/request_logs/"):
            iid = path.rstrip("/").split("/")[-1]
            return Reply(200, {"success": True, "result_url": f"{self.url}/logs/{iid}.log"})
        if path.startswith("/instances/"):
            iid = path.strip("/").split("/")[-1]
            if r.method == "GET":
                # An id this account does not hold (destroyed, or never was) answers with no
                # instance, as the API does.
                if int(iid) not in (self.instance["id"], *self.created):
                    return Reply(200, {"instances": None})
                return Reply(200, {"instances": {**self.instance, "id": int(iid)}})
            if r.method == "DELETE":
                return Reply(200, {"success": True})
        return Reply(404, {"success": False, "error": "not_found", "msg": f"no route {path}"})
