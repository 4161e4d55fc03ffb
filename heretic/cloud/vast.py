"""Vast.ai over its REST API (v0): offer search, create, status, logs, destroy.

Endpoints (https://console.vast.ai/api/v0, Bearer key): POST /bundles/ searches offers with a
JSON filter; PUT /asks/{offer}/ creates an instance (runtype "args" keeps the image's own
ENTRYPOINT); GET /instances/{id}/ reads it; PUT /instances/request_logs/{id}/ asks for a log
link, fetched without the key; DELETE /instances/{id}/ destroys it (the only call that ends
storage billing). Env values are visible in the instance details on Vast and to the host's
operator, who can read a container's environment: the launcher sends credentials there only
when asked (heretic/cloud/secret_routes.py) and says who can read them. Vast never restarts
an exited container and keeps billing its GPU (`exited` maps to "paused").
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from heretic.cloud.http import ApiClient, PreparedRequest, Sleep
from heretic.cloud.records import Instance, LaunchSpec, Offer, OfferQuery, ProviderName, State
from heretic.errors import CloudError

DEFAULT_URL = "https://console.vast.ai/api/v0"
URL_ENV = "HERETIC_VAST_API_URL"

# actual_status values from the API reference ("show instance"); null while provisioning.
_STATES: dict[str, State] = {
    "provisioning": "pending",
    "created": "pending",
    "loading": "pending",
    "scheduling": "pending",
    "rebooting": "pending",
    # frozen: paused with its GPU still reserved and billed, not "exited" (a stopped
    # instance bills only its storage).
    "running": "running",
    "frozen": "paused",
    "stopped": "exited",
    # exited: the container ended but the contract (cur_state "running") keeps the GPU reserved
    # and billed; Vast never restarts it (docs.vast.ai, instance states).
    "exited": "paused",
    "offline": "failed",
    "error": "failed",
    "unknown": "unknown",
}


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class VastClient:
    name: ProviderName = "vast"

    def __init__(
        self,
        key: str | None,
        *,
        base_url: str | None = None,
        sleep: Sleep = time.sleep,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        log_polls: int = 10,
    ) -> None:
        url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
        self.api = ApiClient("vast", url, key, sleep=sleep, retries=retries, transport=transport)
        self._sleep = sleep
        self._log_polls = log_polls

    def close(self) -> None:
        self.api.close()

    # --- offers --------------------------------------------------------------------------
    def search_request(self, query: OfferQuery) -> PreparedRequest:
        body: dict[str, Any] = {
            # vast-cli's `search offers` defaults (vast.py at b25bd95): datacenter-listed hosts
            # only, and offers nobody has rented.
            "external": {"eq": False},
            "rented": {"eq": False},
            "gpu_name": {"in": list(query.gpu.vast_names)},
            "gpu_ram": {"gte": query.gpu.vast_min_ram_mb},
            "num_gpus": {"eq": query.num_gpus},
            "rentable": {"eq": True},
            "verified": {"eq": True},
            "reliability": {"gt": query.min_reliability},
            "cuda_max_good": {"gte": float(query.min_cuda)},
            "order": [["dph_total", "asc"]],
            "type": "on-demand",
            "limit": query.limit,
        }
        if query.max_price is not None:
            body["dph_total"] = {"lte": query.max_price}
        if query.min_disk_gb:
            body["disk_space"] = {"gte": query.min_disk_gb}
            # The disk the instance will have: Vast then quotes dph_total with its storage
            # cost (vast-cli's `search offers --storage`); without it the price is for ~5 GB.
            body["allocated_storage"] = float(query.min_disk_gb)
        return self.api.prepare("POST", "/bundles/", body=body)

    def search(self, query: OfferQuery) -> list[Offer]:
        req = self.search_request(query)
        data = self.api.call(req.method, "/bundles/", body=req.body) or {}
        offers = [self._offer(raw) for raw in data.get("offers") or [] if isinstance(raw, dict)]
        # The filter already asks for this; checked again so a lax server cannot overspend.
        if query.max_price is not None:
            offers = [
                o
                for o in offers
                if o.price_per_hour is not None and o.price_per_hour <= query.max_price
            ]
        return sorted(offers, key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0))

    @staticmethod
    def _offer(raw: dict[str, Any]) -> Offer:
        return Offer(
            provider="vast",
            offer_id=str(raw.get("id")),
            gpu_name=str(raw.get("gpu_name", "")),
            num_gpus=int(raw.get("num_gpus") or 1),
            gpu_ram_gb=round((_float(raw.get("gpu_ram")) or 0) / 1024, 1),
            price_per_hour=_float(raw.get("dph_total")),
            availability="rentable",
            location=str(raw.get("geolocation") or ""),
            reliability=_float(raw.get("reliability", raw.get("reliability2"))),
        )

    # --- instances -----------------------------------------------------------------------
    def launch_request(self, offer: Offer, spec: LaunchSpec) -> PreparedRequest:
        body = {
            "client_id": "me",
            "image": spec.image,
            "disk": spec.disk_gb,
            "env": dict(spec.env),
            "runtype": "args",  # keep the image's ENTRYPOINT; ssh/jupyter would replace it
            "label": spec.label,
            "target_state": "running",
        }
        return self.api.prepare("PUT", f"/asks/{offer.offer_id}/", body=body)

    def launch(self, offer: Offer, spec: LaunchSpec) -> Instance:
        req = self.launch_request(offer, spec)
        data = (
            self.api.call("PUT", f"/asks/{offer.offer_id}/", body=req.body, idempotent=False) or {}
        )
        contract = data.get("new_contract")
        if not data.get("success") or contract is None:
            raise CloudError(
                f"vast did not create an instance from offer {offer.offer_id}: "
                f"{data.get('msg') or data.get('error') or data}.",
                "The offer may have been taken; run the command again to pick another.",
            )
        return Instance(
            "vast",
            str(contract),
            "created",
            "pending",
            offer.gpu_name,
            offer.price_per_hour,
            spec.label,
        )

    def status(self, instance_id: str) -> Instance:
        # owner=me as vast-cli's `show instance` sends it: only this account's instances.
        data = self.api.call("GET", f"/instances/{instance_id}/", params={"owner": "me"}) or {}
        raw = data.get("instances")
        if isinstance(raw, list):
            raw = raw[0] if raw else None
        if not raw:
            # Destroyed instances vanish from the account, and so does an id that never was.
            return Instance(
                "vast",
                instance_id,
                "not found",
                "not_found",
                message="no such instance on this account: destroyed, or a wrong id",
            )
        # Not cur_state: that is the contract's state, "running" from the moment of renting.
        status = str(raw.get("actual_status") or "provisioning")
        message = str(raw.get("status_msg") or "")
        state = _STATES.get(status, "unknown")
        if "error response from daemon" in message.lower():
            state = "failed"  # a bad image leaves actual_status at "loading" for ever
        return Instance(
            "vast",
            instance_id,
            status,
            state,
            str(raw.get("gpu_name", "")),
            _float(raw.get("dph_total")),
            str(raw.get("label") or ""),
            message[:300],
        )

    def logs(self, instance_id: str, tail: int = 200) -> str:
        data = (
            self.api.call(
                "PUT", f"/instances/request_logs/{instance_id}/", body={"tail": str(tail)}
            )
            or {}
        )
        url = data.get("result_url") or data.get("temp_download_url")
        if not url:
            raise CloudError(
                f"vast gave no log link for instance {instance_id}: {data.get('msg') or data}.",
                "Retry in a minute.",
            )
        # The link is filled a few seconds after the request; 403/404 until then.
        for attempt in range(self._log_polls):
            response = self.api.fetch_public(url)
            if response.status_code == 200:
                return response.text
            if response.status_code not in (403, 404):
                break
            self._sleep(min(2.0 * (attempt + 1), 10.0))
        raise CloudError(
            f"vast's log link for instance {instance_id} stayed empty.",
            "The container may not have started yet; retry in a minute.",
        )

    def terminate(self, instance_id: str) -> None:
        """Destroy the instance (DELETE /instances/{id}/): GPU and storage billing end."""
        data = self.api.call("DELETE", f"/instances/{instance_id}/") or {}
        self._require_success(data, "destroy", instance_id)

    def stop(self, instance_id: str) -> None:
        """Stop the instance (PUT /instances/{id}/ {"state": "stopped"}, as vast-cli's `stop
        instance` sends it): GPU billing ends, the disk is kept and billed."""
        data = self.api.call("PUT", f"/instances/{instance_id}/", body={"state": "stopped"}) or {}
        self._require_success(data, "stop", instance_id)

    @staticmethod
    def _require_success(data: Any, verb: str, instance_id: str) -> None:
        """Vast answers some refusals with 200 and {"success": false, "msg": ...}."""
        if isinstance(data, dict) and data.get("success") is False:
            raise CloudError(
                f"vast refused to {verb} instance {instance_id}: {data.get('msg') or data}.",
                f"Check the id with `heretic cloud status`, or {verb} it in the Vast.ai console.",
            )
