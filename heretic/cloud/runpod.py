"""RunPod over REST API v2 (https://api.runpod.io/v2): availability, create, status, logs,
terminate. No SDK: RunPod's SDK speaks the GraphQL API that is being retired.

Endpoints: GET /catalog/gpus?include=AVAILABILITY&product=POD gives each GPU type's price per
cloud tier and stock (NONE, LOW, MEDIUM, HIGH); POST /pods creates a pod (no `args`, so the
image's own entrypoint and command run); GET /pods/{id}; GET /pods/{id}/logs is a Server-Sent
Events stream of {"source", "line", "ts"} objects; DELETE /pods/{id} terminates. Errors are
RFC 9457 problem documents. Stock is a level, not a reservation: a create can still fail.
RunPod restarts a container whose main process exits, so the image must terminate its own
pod when done (HERETIC_SHUTDOWN_AFTER=true) or it runs again. The container disk is wiped on
every restart, so /workspace (Hub cache, study, done marker, failure count) is always a mount:
the network volume given, else a persistent pod volume of the run's disk size; only then does
a restart resume the study or stop at the done marker instead of starting over. A network
volume mounts only on a pod in its own data center, so the create names that data center
(`dataCenterIds`, looked up with GET /network-volumes/{id}). A terminated pod is deleted:
GET /pods/{id} answers 404, as for an id that never was, which `status` reports as not_found.
Shapes follow RunPod's published OpenAPI description of REST v2 (runpod/docs,
api-reference-v2/openapi.json, info.version 2.0.0).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from typing import Any

import httpx

from heretic.cloud.http import ApiClient, ApiStatusError, PreparedRequest, Sleep
from heretic.cloud.records import Instance, LaunchSpec, Offer, OfferQuery, ProviderName, State
from heretic.errors import CloudError

DEFAULT_URL = "https://api.runpod.io/v2"
URL_ENV = "HERETIC_RUNPOD_API_URL"
LEVELS = {"NONE": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
CONTAINER_DISK_GB = 30  # root filesystem and /tmp only: the run's data lives in /workspace
WORKSPACE = "/workspace"  # the image's HF_HOME and HERETIC_OUTPUT are under it

_STATES: dict[str, State] = {
    "PROVISIONING": "pending",
    "STARTING": "pending",
    "RUNNING": "running",
    "EXITED": "exited",
    "ERROR": "failed",
    "TERMINATED": "terminated",
}


def _availability(gpu: dict[str, Any]) -> str:
    """The best stock level: the GPU's own field, else the best of its data centers."""
    level = str(gpu.get("availability") or "").upper()
    if level in LEVELS:
        return level
    best = "NONE"
    for dc in gpu.get("dataCenters") or []:
        if isinstance(dc, dict):
            found = str(dc.get("availability") or "").upper()
            if LEVELS.get(found, 0) > LEVELS[best]:
                best = found
    return best


def _log_lines(text: str) -> list[str]:
    out: list[str] = []
    for raw in text.splitlines():
        if raw.startswith((":", "id:", "event:", "retry:")) or not raw.strip():
            continue
        line = raw.removeprefix("data:").strip()
        try:
            event = json.loads(line)
        except ValueError:
            out.append(line)
            continue
        if isinstance(event, dict) and "line" in event:
            out.append(str(event["line"]))
        else:
            out.append(line)
    return out


class RunPodClient:
    name: ProviderName = "runpod"

    def __init__(
        self,
        key: str | None,
        *,
        base_url: str | None = None,
        sleep: Sleep = time.sleep,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        log_idle_s: float = 3.0,
    ) -> None:
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.api = ApiClient("runpod", url, key, sleep=sleep, retries=retries, transport=transport)
        self._log_idle_s = log_idle_s

    def close(self) -> None:
        self.api.close()

    # --- availability --------------------------------------------------------------------
    def search_request(self, query: OfferQuery) -> PreparedRequest:
        params = {
            "include": "AVAILABILITY",
            "product": "POD",
            "cloud": query.cloud,
            "count": str(query.num_gpus),
            "minCudaVersion": query.min_cuda,
        }
        return self.api.prepare("GET", "/catalog/gpus", params=params)

    def search(self, query: OfferQuery) -> list[Offer]:
        req = self.search_request(query)
        data = self.api.call("GET", "/catalog/gpus", params=req.params) or {}
        gpus = data.get("gpus") if isinstance(data, dict) else data
        offers: list[Offer] = []
        for gpu in gpus or []:
            if not isinstance(gpu, dict) or gpu.get("id") not in query.gpu.runpod_ids:
                continue
            level = _availability(gpu)
            price = (gpu.get("price") or {}).get(query.cloud.lower())
            price = float(price) * query.num_gpus if price else None
            if level == "NONE" or price is None:
                continue
            if query.max_price is not None and price > query.max_price:
                continue
            offers.append(
                Offer(
                    provider="runpod",
                    offer_id=str(gpu["id"]),
                    gpu_name=str(gpu.get("displayName") or gpu.get("name") or gpu["id"]),
                    num_gpus=query.num_gpus,
                    gpu_ram_gb=float(gpu.get("memory") or 0),
                    price_per_hour=price,
                    availability=level,
                    cloud=query.cloud,
                )
            )
        return sorted(offers, key=lambda o: (o.price_per_hour or 0, -LEVELS[o.availability]))

    # --- pods ----------------------------------------------------------------------------
    def launch_request(self, offer: Offer, spec: LaunchSpec) -> PreparedRequest:
        body: dict[str, Any] = {
            "name": spec.label,
            "image": spec.image,
            # No "args": the image's own entrypoint and command run unchanged.
            "gpu": {"id": offer.offer_id, "count": offer.num_gpus, "minCudaVersion": spec.min_cuda},
            "cloud": spec.cloud,
            "disk": min(spec.disk_gb, CONTAINER_DISK_GB),
            "env": dict(spec.env),
            "startSsh": False,
            "startJupyter": False,
        }
        if spec.volume_id:
            body["mounts"] = {"network": [{"volumeId": spec.volume_id, "path": WORKSPACE}]}
            if spec.data_center_id:
                # A network volume mounts only on a pod in its own data center.
                body["dataCenterIds"] = [spec.data_center_id]
        else:
            body["mounts"] = {"persistent": {"size": max(spec.disk_gb, 10), "path": WORKSPACE}}
        return self.api.prepare("POST", "/pods", body=body)

    def volume_data_center(self, volume_id: str) -> str:
        """The data center of a network volume (GET /v2/network-volumes/{id})."""
        volume = self.api.call("GET", f"/network-volumes/{volume_id}") or {}
        center = volume.get("dataCenter") if isinstance(volume, dict) else None
        if not center:
            raise CloudError(
                f"runpod gave no data center for network volume {volume_id}.",
                "Check the id under Storage in the RunPod console.",
            )
        return str(center)

    def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        if spec.volume_id and not spec.data_center_id:
            spec = replace(spec, data_center_id=self.volume_data_center(spec.volume_id))
        req = self.launch_request(offer, spec)
        pod = self.api.call("POST", "/pods", body=req.body, idempotent=False) or {}
        return self._instance(pod, fallback_id="?")

    def status(self, instance_id: str) -> Instance:
        try:
            pod = self.api.call("GET", f"/pods/{instance_id}") or {}
        except ApiStatusError as exc:
            if exc.status != 404:
                raise
            # A terminated pod is deleted: v2 answers 404 for it, as for an id that never was.
            return Instance(
                "runpod",
                instance_id,
                "NOT FOUND",
                "not_found",
                message="no such pod on this account: terminated, or a wrong id",
            )
        return self._instance(pod, instance_id)

    @staticmethod
    def _instance(pod: dict[str, Any], fallback_id: str) -> Instance:
        status = str(pod.get("status") or "unknown").upper()
        gpu: dict[str, Any] = pod["gpu"] if isinstance(pod.get("gpu"), dict) else {}
        cost = pod.get("cost")
        # v2 pods carry no status message; where and on what CUDA is what it tells.
        where = ", ".join(f"{k} {pod[k]}" for k in ("dataCenterId", "cudaVersion") if pod.get(k))
        return Instance(
            "runpod",
            str(pod.get("id") or fallback_id),
            status,
            _STATES.get(status, "unknown"),
            str(gpu.get("id") or ""),
            float(cost) if cost else None,
            str(pod.get("name") or ""),
            where[:300],
        )

    def logs(self, instance_id: str, tail: int = 200) -> str:
        req = self.api.prepare(
            "GET",
            f"/pods/{instance_id}/logs",
            params={"tail": str(min(max(tail, 0), 5000)), "source": "container"},
        )
        text = self.api.stream_text(req, idle_s=self._log_idle_s)
        return "\n".join(_log_lines(text))

    def terminate(self, instance_id: str) -> None:
        """Terminate the pod (DELETE /pods/{id}): billing ends, its disk is gone."""
        self.api.call("DELETE", f"/pods/{instance_id}")

    def stop(self, instance_id: str) -> None:
        """Stop the pod (POST /pods/{id}/action {"action": "stop"}; v2 has no /pods/{id}/stop):
        it goes to EXITED, /workspace is kept. A 409 means the action is not valid for the pod's
        current status (the OpenAPI description's only word on it), e.g. already EXITED."""
        try:
            self.api.call("POST", f"/pods/{instance_id}/action", body={"action": "stop"})
        except ApiStatusError as exc:
            if exc.status != 409:
                raise
            raise ApiStatusError(
                f"RunPod answered HTTP 409 to stopping pod {instance_id}: the action is not "
                "valid for the pod's current status.",
                "Check it with `heretic cloud status`; terminate it to end all billing.",
                409,
            ) from exc
