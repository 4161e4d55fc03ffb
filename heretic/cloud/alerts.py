"""Where monitor alerts go: a log line, the terminal bell, a webhook.

Each sink is a callable taking an `Alert`. A sink that fails raises (`WebhookError` for the
webhook, see heretic.webhook); the monitor catches and logs it, so a dead webhook never stops
the watch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

import httpx

from heretic.webhook import post_json


@dataclass(frozen=True)
class Alert:
    event: Literal["available", "gone"]
    provider: str
    gpu: str
    offers: int
    best_price: float | None
    offer_id: str | None
    at: str  # ISO 8601, UTC

    def line(self) -> str:
        if self.event == "available":
            price = f" from ${self.best_price:.2f}/h" if self.best_price is not None else ""
            return (
                f"{self.gpu} AVAILABLE on {self.provider}: {self.offers} offer(s){price}"
                f" (offer {self.offer_id})"
            )
        return f"{self.gpu} no longer available on {self.provider}"


Sink = Callable[[Alert], None]


def log_sink(log: Callable[[str], None]) -> Sink:
    return lambda alert: log(alert.line())


def bell_sink(stream: TextIO) -> Sink:
    def ring(alert: Alert) -> None:
        if alert.event == "available":
            stream.write("\a")
            stream.flush()

    return ring


def webhook_sink(
    url: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None
) -> Sink:
    """POST the alert as JSON to `url` (Slack/Discord-compatible `text` field included)."""

    def post(alert: Alert) -> None:
        post_json(
            url,
            {**asdict(alert), "text": "heretic: " + alert.line()},
            timeout_s=timeout_s,
            transport=transport,
        )

    return post
