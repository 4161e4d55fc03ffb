"""Posting one JSON document to a webhook URL: the one HTTP client for run notifications
(`heretic.lifecycle.notification`) and monitor alerts (`heretic.cloud.alerts`).

Guaranteed: a failure raises `WebhookError` whose text names what went wrong (unreachable,
malformed URL, the HTTP status) and never the URL, because webhook URLs carry their secret in
the path or query. Not guaranteed: delivery; redirects are not followed, so a 3xx is a failure.
"""

from __future__ import annotations

from typing import Any

import httpx

from heretic import __version__


class WebhookError(RuntimeError):
    """A webhook POST that did not get a 2xx answer; the text never holds the URL."""


def shown_url(url: str) -> str:
    """What may be printed of a webhook URL: its scheme and host."""
    try:
        parsed = httpx.URL(url)
    except Exception:  # a malformed URL: say so without echoing it
        return "(malformed URL)"
    return f"{parsed.scheme}://{parsed.host}/..."


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> None:
    """POST `payload` as JSON to `url`; raises WebhookError unless the answer is 2xx."""
    try:
        with httpx.Client(
            timeout=timeout_s, transport=transport, headers={"User-Agent": f"heretic/{__version__}"}
        ) as client:
            response = client.post(url, json=payload)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise WebhookError(f"webhook unreachable ({type(exc).__name__})") from None
    if response.status_code >= 300:
        raise WebhookError(f"webhook answered HTTP {response.status_code}")
