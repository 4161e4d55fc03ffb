"""Rows for the offers table (human and JSON output share them); no printing here."""

from __future__ import annotations

from typing import Any

from heretic.cloud.cost import RunEstimate
from heretic.cloud.records import Instance, Offer

OFFER_COLUMNS = (
    "provider",
    "offer",
    "gpu",
    "gpus",
    "gpu_ram_gb",
    "usd_per_hour",
    "availability",
    "location",
    "est_hours",
    "est_cost_usd",
)


def offer_row(offer: Offer, estimate: RunEstimate | None) -> dict[str, Any]:
    return {
        "provider": offer.provider,
        "offer": offer.offer_id,
        "gpu": offer.gpu_name,
        "gpus": offer.num_gpus,
        "gpu_ram_gb": offer.gpu_ram_gb,
        "usd_per_hour": offer.price_per_hour,
        "availability": offer.availability,
        "location": offer.location or offer.cloud,
        "est_hours": estimate.hours if estimate else None,
        "est_cost_usd": estimate.cost(offer.price_per_hour) if estimate else None,
    }


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def instance_row(instance: Instance) -> dict[str, Any]:
    return {
        "provider": instance.provider,
        "id": instance.instance_id,
        "status": instance.status,
        "state": instance.state,
        "gpu": instance.gpu_name,
        "usd_per_hour": instance.price_per_hour,
        "label": instance.label,
        "message": instance.message,
    }
