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
from heretic.webhook import WebhookError, post_json, shown_url

log = logging.getLogger("heretic.lifecycle")
DISCORD_LIMIT = 2000


def build_payload(status: str, message: str, **facts: Any) -> dict[str, Any]:
    """A payload most webhook receivers accept. `status` is e.g. done, failed, interrupted."""
    host = socket.gethostname()
    text = redact(f"heretic {status} on {host}: {message}")[:DISCORD_LIMIT]
    payload: dict[str, Any] = {
        "text": text,
        "content": text,
        "message": text,
        "title": f"heretic {status}",
        "status": status,
        "host": host,
    }
    payload.update({k: v for k, v in facts.items() if v is not None})
    return payload


def send_notification(
    url: str,
    payload: dict[str, Any],
    *,
    timeout_s: float = 10,
    transport: httpx.BaseTransport | None = None,
) -> bool:
    """POST `payload` as JSON to `url`; True on a 2xx answer, False (with a warning) otherwise."""
    try:
        post_json(url, payload, timeout_s=timeout_s, transport=transport)
    except WebhookError as exc:
        log.warning("Notification to %s failed: %s.", shown_url(url), exc)
        return False
    except Exception as exc:  # the run's outcome must not depend on a webhook
        log.warning("Notification to %s failed: %s", shown_url(url), type(exc).__name__)
        return False
    return True
