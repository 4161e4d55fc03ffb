"""One small JSON-over-HTTPS client shared by the provider modules (httpx underneath).

Guaranteed: every request has a timeout; 429 and 5xx answers (and connection failures) are
retried with exponential back-off that honours Retry-After up to a cap; requests that create
something are retried only when the provider certainly did not act on them (429, or a
connection that never opened), so a retry never rents a second machine. A create that may
have happened (the answer was lost, or a 5xx) raises `CreateUncertain`, so a caller that would
try again (the monitor) can stop instead. Every failure becomes a `CloudError` that quotes
what the provider answered, with the API key redacted. The sleep
function and the httpx transport are injectable so tests neither wait nor leave 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from heretic import __version__
from heretic.cloud.keys import KEY_ENV
from heretic.errors import CloudError
from heretic.secrets import redact

Sleep = Callable[[float], None]
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 60.0


class CreateUncertain(CloudError):
    """A create whose outcome is unknown: the provider may have rented the machine."""


class ApiStatusError(CloudError):
    """The provider answered with an HTTP error status (kept, so callers can tell 404 apart)."""

    def __init__(self, message: str, hint: str = "", status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass(frozen=True)
class PreparedRequest:
    """A request as it would be sent; `describe()` is safe to print (the key is masked)."""

    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    body: Any = None

    def describe(self, secrets: tuple[str | None, ...] = ()) -> dict[str, Any]:
        shown: dict[str, Any] = {"method": self.method, "url": self.url}
        if self.params:
            shown["params"] = dict(self.params)
        shown["headers"] = {"Authorization": "Bearer ****"}
        if self.body is not None:
            shown["json"] = json.loads(redact(json.dumps(self.body), secrets, hint=True))
        return shown


def _problem_text(response: httpx.Response) -> str:
    """The provider's own words: RFC 9457 title/detail (RunPod), msg/error (Vast), or the body."""
    try:
        doc = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if not isinstance(doc, dict):
        return str(doc)[:300]
    parts = [str(doc[k]) for k in ("title", "detail", "error", "msg", "message") if doc.get(k)]
    for err in doc.get("errors") or []:
        # RunPod v2 lists validation failures as plain strings; other APIs use objects.
        if isinstance(err, dict):
            parts.append(f"{err.get('field', err.get('path', '?'))}: {err.get('message', err)}")
        elif isinstance(err, str):
            parts.append(err)
    return "; ".join(parts)[:500] or json.dumps(doc)[:300]


def _hint(provider: str, status: int) -> str:
    if status in (401, 403):
        return (
            f"The {provider} API key was refused: check {KEY_ENV.get(provider, 'the key')} "
            "(and that the key has the permissions this call needs)."
        )
    if status == 404:
        return "Check the id: the instance may already be gone."
    if status == 429:
        # Vast answers a plain-text 429 without Retry-After when an endpoint is called more
        # often than its minimum interval; RunPod sends Retry-After (both are honoured).
        return (
            "The provider is rate-limiting this account (too many calls to this endpoint "
            "in a short time); wait a few minutes and retry."
        )
    if status >= 500:
        return "The provider is having trouble; retry later."
    return "Check the options given; the provider's message above says what it rejected."


class ApiClient:
    """Bearer-authenticated JSON calls against one provider's base URL."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        key: str | None,
        *,
        timeout_s: float = 30.0,
        retries: int = 4,
        backoff_s: float = 2.0,
        sleep: Sleep = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
            follow_redirects=False,
            headers={"User-Agent": f"heretic/{__version__}", "Accept": "application/json"},
        )

    def close(self) -> None:
        self._http.close()

    def prepare(
        self, method: str, path: str, *, params: Mapping[str, str] | None = None, body: Any = None
    ) -> PreparedRequest:
        return PreparedRequest(method, self.base_url + path, dict(params or {}), body)

    def _headers(self) -> dict[str, str]:
        if not self._key:
            raise CloudError(
                f"No {self.provider} API key is configured for this call.",
                f"Export {KEY_ENV.get(self.provider, 'the API key')}.",
            )
        return {"Authorization": f"Bearer {self._key}"}

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after: str = response.headers.get("Retry-After", "")
            if after.strip().isdigit():
                return min(float(after), MAX_RETRY_AFTER_S)
        return min(self.backoff_s * 2.0**attempt, MAX_RETRY_AFTER_S)

    def _error(self, req: PreparedRequest, detail: str, status: int | None) -> ApiStatusError:
        where = f"{req.method} {req.url}"
        what = (
            f"{self.provider} answered HTTP {status} to {where}: {detail}"
            if status
            else f"Could not reach {self.provider} ({where}): {detail}"
        )
        hint = (
            _hint(self.provider, status)
            if status
            else (
                "Check the network connection (and HERETIC_*_API_URL if you set one), then retry."
            )
        )
        return ApiStatusError(redact(what, (self._key,)), hint, status)

    def _uncertain(self, req: PreparedRequest, detail: str) -> CreateUncertain:
        return CreateUncertain(
            redact(
                f"{self.provider} may or may not have acted on {req.method} {req.url} ({detail}).",
                (self._key,),
            ),
            f"List your {self.provider} instances in its console before trying again, so a "
            "machine is not rented twice; stop any you do not want with `heretic cloud stop`.",
        )

    def send(self, req: PreparedRequest, *, idempotent: bool = True) -> httpx.Response:
        """Send with retries; return the successful response or raise `CloudError`."""
        headers = self._headers()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(
                    req.method, req.url, params=req.params or None, json=req.body, headers=headers
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never arrived: retry
                if last:
                    raise self._error(req, f"{type(exc).__name__}: {exc}", None) from None
                self._sleep(self._delay(attempt, None))
                continue
            except httpx.HTTPError as exc:
                if not idempotent:  # the request may have arrived: its effect is unknown
                    raise self._uncertain(req, f"{type(exc).__name__}: {exc}") from None
                if last:
                    raise self._error(req, f"{type(exc).__name__}: {exc}", None) from None
                self._sleep(self._delay(attempt, None))
                continue
            retryable = response.status_code == 429 or (
                idempotent and response.status_code in RETRY_STATUSES
            )
            if response.status_code < 400:
                return response
            if not idempotent and response.status_code >= 500:
                raise self._uncertain(
                    req, f"HTTP {response.status_code}: " + _problem_text(response)
                )
            if not retryable or last:
                raise self._error(req, _problem_text(response), response.status_code)
            self._sleep(self._delay(attempt, response))
        raise AssertionError("unreachable")  # the loop always returns or raises

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        idempotent: bool = True,
    ) -> Any:
        """Send and decode the JSON answer (None for an empty body)."""
        req = self.prepare(method, path, params=params, body=body)
        response = self.send(req, idempotent=idempotent)
        if not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            detail = "the answer was not JSON: " + response.text.strip()[:200]
            if not idempotent:  # it succeeded, but what it created cannot be read
                raise self._uncertain(req, detail) from None
            raise self._error(req, detail, response.status_code) from None

    def stream_text(
        self,
        req: PreparedRequest,
        *,
        idle_s: float = 3.0,
        max_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> str:
        """Read an event stream that may never close: stop at EOF, after `idle_s` of silence,
        or after `max_s` in all, and return what arrived."""
        headers = {**self._headers(), "Accept": "text/event-stream"}
        lines: list[str] = []
        start = clock()
        try:
            with self._http.stream(
                req.method,
                req.url,
                params=req.params or None,
                headers=headers,
                timeout=httpx.Timeout(idle_s, connect=10.0),
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(req, _problem_text(response), response.status_code)
                for line in response.iter_lines():
                    lines.append(line)
                    if clock() - start > max_s:
                        break
        except httpx.ReadTimeout:
            pass  # the stream went quiet: what arrived is the answer
        except httpx.HTTPError as exc:
            raise self._error(req, f"{type(exc).__name__}: {exc}", None) from None
        return "\n".join(lines)

    def fetch_public(self, url: str) -> httpx.Response:
        """GET a URL the provider handed out (a signed log link) without sending the key."""
        try:
            # The client's default headers carry no key; only `send` adds it.
            return self._http.get(url, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise CloudError(
                f"Could not fetch {self.provider} logs from the link it gave: "
                f"{type(exc).__name__}.",
                "Retry in a few seconds.",
            ) from None
