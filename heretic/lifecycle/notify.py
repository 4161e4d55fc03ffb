"""Finish/failure notification: one JSON POST to a webhook URL.

The payload carries the message under "text" (Slack, Mattermost), "content" (Discord) and
"message" (ntfy's JSON form, Gotify), plus structured fields. Guaranteed: never raises, and
redacts secrets from the text; a failed notification is a logged warning, never a failed run.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import httpx

from heretic.secrets import redact

log = logging.getLogger("heretic.lifecycle")
DISCORD_LIMIT = 2000


def build_payload(status: str, message: str, **facts: Any) -> dict[str, Any]:
    """A payload most webhook receivers accept. `status` is e.g. done, failed, interrupted."""
    host = socket.gethostname()
    text = redact(f"heretic {status} on {host}: {message}")[:DISCORD_LIMIT]
    payload: dict[str, Any] = {"text": text, "content": text, "message": text,
                               "title": f"heretic {status}", "status": status, "host": host}
    payload.update({k: v for k, v in facts.items() if v is not None})
    return payload


def _host_of(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except Exception:  # a malformed URL: say so without echoing it
        return "(malformed URL)"
    return f"{parsed.scheme}://{parsed.host}/..."


def send_notification(url: str, payload: dict, *, timeout_s: float = 10,
                      transport: httpx.BaseTransport | None = None) -> bool:
    """POST `payload` as JSON to `url`; True on a 2xx answer, False (with a warning) otherwise."""
    shown = _host_of(url)  # webhook URLs carry their secret in the path or query
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            response = client.post(url, json=payload)
    except Exception as exc:  # the run's outcome must not depend on a webhook
        log.warning("Notification to %s failed: %s", shown, type(exc).__name__)
        return False
    if response.status_code >= 300:
        log.warning("Notification to %s answered HTTP %d.", shown, response.status_code)
        return False
    return True
