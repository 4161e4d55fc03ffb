"""A loopback HTTP server that answers like RunPod's REST API v2 (shapes from the public
OpenAPI reference): catalog with availability, pods create/get/delete, logs as Server-Sent
Events, RFC 9457 problem documents for errors."""

from __future__ import annotations

import json
from typing import Any

from fakes.fake_vast import LoopbackServer, Recorded, Reply

RUNPOD_KEY = "rpa_TESTKEY0123456789ABCDEF"


def catalog_gpu(
    gpu_id: str,
    availability: str,
    secure: float | None,
    community: float | None = None,
    memory: int = 80,
    per_dc: bool = False,
) -> dict[str, Any]:
    gpu: dict[str, Any] = {
        "id": gpu_id,
        "displayName": gpu_id.replace("NVIDIA ", ""),
        "memory": memory,
        "price": {"secure": secure, "community": community},
    }
    if per_dc:
        gpu["dataCenters"] = [
            {"id": "EU-RO-1", "availability": "NONE"},
            {"id": "US-KS-2", "availability": availability},
        ]
    else:
        gpu["availability"] = availability
    return gpu


def problem(status: int, title: str, detail: str) -> dict[str, Any]:
    return {"type": "about:blank", "title": title, "status": status, "detail": detail}


class FakeRunPod(LoopbackServer):
    PREFIX = "/v2"
    provider = "runpod"

    def refuse(self, problems: list[str]) -> Reply:
        # RunPod v2: RFC 9457 problem document with the validation failures as strings.
        return Reply(
            422,
            {
                **problem(422, "Unprocessable Entity", "Request validation failed."),
                "errors": problems,
            },
            headers={"Content-Type": "application/problem+json"},
        )

    def __init__(self, key: str = RUNPOD_KEY) -> None:
        self.key = key
        self.gpus: list[dict[str, Any]] = [
            catalog_gpu("NVIDIA A100 80GB PCIe", "HIGH", 1.64, 1.19),
            catalog_gpu("NVIDIA A100-SXM4-80GB", "LOW", 1.89, 1.39, per_dc=True),
            catalog_gpu("NVIDIA H100 80GB HBM3", "HIGH", 2.99),
            catalog_gpu("NVIDIA GeForce RTX 4090", "HIGH", 0.69, memory=24),
        ]
        self.search_script: list[list[dict[str, Any]]] = []
        self.pod_status = "RUNNING"
        self.pod_extra: dict[str, Any] = {}
        self.volumes: dict[str, dict[str, Any]] = {
            "vol1": {
                "id": "vol1",
                "name": "heretic",
                "size": 200,
                "dataCenter": "EU-RO-1",
                "type": "STANDARD",
            }
        }
        self.log_lines = ["loading model", "trial 1/200"]
        super().__init__(self.route)

    @property
    def base(self) -> str:
        return self.url + self.PREFIX

    def _pod(self, pod_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        body = body or {}
        return {
            "id": pod_id,
            "name": body.get("name", "heretic-x"),
            "image": body.get("image", "img"),
            "status": self.pod_status,
            "gpu": {"id": (body.get("gpu") or {}).get("id", "NVIDIA A100 80GB PCIe"), "count": 1},
            "cloud": "SECURE",
            "cost": 1.64,
            "env": body.get("env", {"HF_TOKEN": "{{ RUNPOD_SECRET_hf_token }}"}),
            **self.pod_extra,
        }

    def route(self, r: Recorded) -> Reply:
        if r.headers.get("authorization") != f"Bearer {self.key}":
            return Reply(
                401,
                problem(401, "Unauthorized", "The API key is invalid."),
                headers={"Content-Type": "application/problem+json"},
            )
        path = r.path.removeprefix(self.PREFIX)
        if r.method == "GET" and path == "/catalog/gpus":
            gpus = self.search_script.pop(0) if self.search_script else self.gpus
            return Reply(200, {"gpus": gpus})
        if r.method == "POST" and path == "/pods":
            self.created.append("pod_abc123")
            return Reply(201, self._pod("pod_abc123", r.body))
        if r.method == "GET" and path.startswith("/network-volumes/"):
            volume = self.volumes.get(path.split("/")[2])
            if volume is None:
                return Reply(404, problem(404, "Not Found", "network volume not found"))
            return Reply(200, volume)
        if path.startswith("/pods/") and path.endswith("/logs"):
            events = "".join(
                f"id: 2026-11-20T10:00:0{i}Z\ndata: "
                + json.dumps({"source": "container", "line": line, "ts": f"2026-11-20T10:00:0{i}Z"})
                + "\n\n"
                for i, line in enumerate(self.log_lines)
            )
            return Reply(200, raw=events.encode(), headers={"Content-Type": "text/event-stream"})
        if path.startswith("/pods/"):
            pod_id = path.split("/")[2]
            if pod_id != "pod_abc123":
                return Reply(404, problem(404, "Not Found", f"pod {pod_id} not found"))
            if r.method == "GET":
                return Reply(200, self._pod(pod_id))
            if r.method == "DELETE":
                return Reply(204)
        return Reply(404, problem(404, "Not Found", f"no route {path}"))
