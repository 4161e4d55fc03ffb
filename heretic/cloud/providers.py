"""Make a provider client by name, with its key from the environment or key file."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from heretic.cloud.http import Sleep
from heretic.cloud.keys import load_key, require_key
from heretic.cloud.records import PROVIDERS, Offer, OfferQuery, Provider
from heretic.cloud.runpod import RunPodClient
from heretic.cloud.vast import VastClient
from heretic.errors import CloudError


def make_client(
    name: str,
    *,
    key: str | None = None,
    base_url: str | None = None,
    sleep: Sleep = time.sleep,
    retries: int = 4,
    need_key: bool = True,
    transport: httpx.BaseTransport | None = None,
) -> Provider:
    """A client for `name` (vast or runpod). With need_key=False (dry runs) a missing key is
    allowed: the client can then only prepare requests, not send them."""
    if name not in PROVIDERS:
        raise CloudError(f"Unknown provider '{name}'.", "Choose vast or runpod.")
    if key is None:
        key = require_key(name) if need_key else load_key(name)
    if name == "vast":
        return VastClient(key, base_url=base_url, sleep=sleep, retries=retries, transport=transport)
    return RunPodClient(key, base_url=base_url, sleep=sleep, retries=retries, transport=transport)


def provider_names(choice: str) -> list[str]:
    """`all` means every provider; otherwise the one named (validated)."""
    if choice == "all":
        return list(PROVIDERS)
    if choice not in PROVIDERS:
        raise CloudError(f"Unknown provider '{choice}'.", "Choose vast, runpod or all.")
    return [choice]


def search_offers(names: list[str], query: OfferQuery, warn: Callable[[str], None]) -> list[Offer]:
    """Offers matching `query` from every provider in `names`, cheapest first. With several
    providers one that fails is skipped with a warning; the search fails when all do."""
    offers: list[Offer] = []
    failures: list[CloudError] = []
    for name in names:
        try:
            client = make_client(name)
            try:
                offers.extend(client.search(query))
            finally:
                client.close()
        except CloudError as exc:
            if len(names) == 1:
                raise
            failures.append(exc)
            warn(f"WARNING: {name} skipped: {exc.paragraph()}")
    if failures and len(failures) == len(names):
        raise failures[0]
    offers.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0))
    return offers
