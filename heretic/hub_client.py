"""Deadlines for talking to the Hugging Face Hub: every request a connect and a read timeout,
and a whole job (an upload with its retries) one overall deadline.

huggingface_hub's own HTTP client has no timeout, and some of its calls pass `timeout=None`
per request (which means "wait for ever" to httpx), so a server that accepts the connection
and never answers hangs the caller for good. `hub_timeouts()` installs, for its duration, a
client whose transport fills in every missing or unbounded timeout of every request with ours.
`run_with_deadline` runs a job in a worker thread and gives up on it at the deadline or when a
stop is requested; the abandoned worker is a daemon thread and its connections are closed when
the client is swapped back, so it cannot keep the process alive.

Guaranteed: no request made inside `hub_timeouts()` waits longer than the timeouts for one
connect or one read; `run_with_deadline` returns or raises within about `poll_s` of the
deadline. Not guaranteed: that an abandoned job did nothing (a commit may still have landed;
the upload verifies what is on the Hub the next time). Transfers that huggingface_hub hands to
native code (hf_xet) are bounded by the overall deadline only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import httpx2

T = TypeVar("T")

CONNECT_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 120.0  # one read (or write) of a socket, not a whole transfer


@dataclass(frozen=True)
class Timeouts:
    connect_s: float = CONNECT_TIMEOUT_S
    read_s: float = READ_TIMEOUT_S

    def limits(self) -> dict[str, float]:
        return {
            "connect": self.connect_s,
            "read": self.read_s,
            "write": self.read_s,
            "pool": self.connect_s,
        }


class DeadlineExceeded(Exception):
    """The job did not finish within its deadline (it may still be running, abandoned)."""


class Stopped(Exception):
    """A stop was requested while the job ran (it may still be running, abandoned)."""


def _bounded(limits: dict[str, float], requested: object) -> dict[str, float]:
    given = requested if isinstance(requested, dict) else {}
    out = {}
    for key, limit in limits.items():
        value = given.get(key)
        out[key] = limit if value is None else min(float(value), limit)
    return out


def bounded_client(timeouts: Timeouts) -> httpx2.Client:
    """An httpx2 client like huggingface_hub's default one, whose every request is bounded."""
    import httpx2
    from huggingface_hub.utils import _http

    limits = timeouts.limits()

    class _BoundedTransport(httpx2.BaseTransport):
        def __init__(self) -> None:
            self._inner = httpx2.HTTPTransport()

        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            request.extensions["timeout"] = _bounded(limits, request.extensions.get("timeout"))
            return self._inner.handle_request(request)

        def close(self) -> None:
            self._inner.close()

    # The Hub's own request hook: offline mode, request ids (private, so looked up softly).
    hook = getattr(_http, "hf_request_event_hook", None)
    return httpx2.Client(
        event_hooks={"request": [hook]} if hook is not None else {},
        follow_redirects=True,
        timeout=httpx2.Timeout(**limits),
        transport=_BoundedTransport(),
    )


@contextmanager
def hub_timeouts(timeouts: Timeouts | None = None) -> Iterator[None]:
    """huggingface_hub's calls in this block use `bounded_client(timeouts)`; the previous
    client factory is put back after (which also closes the bounded client's connections)."""
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    chosen = timeouts or Timeouts()
    set_client_factory(lambda: bounded_client(chosen))
    try:
        yield
    finally:
        set_client_factory(previous)


def run_with_deadline(
    job: Callable[[], T],
    deadline_s: float,
    *,
    should_stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.2,
) -> T:
    """`job()` in a worker thread: its result, or its exception re-raised here; Stopped when
    `should_stop()` turns true, DeadlineExceeded after `deadline_s` seconds."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = job()
        except BaseException as exc:  # handed to the caller's thread, re-raised there
            outcome["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name="heretic-hub-job", daemon=True)
    worker.start()
    end = time.monotonic() + deadline_s
    while not done.wait(min(poll_s, max(end - time.monotonic(), 0.0))):
        if should_stop():
            raise Stopped()
        if time.monotonic() >= end:
            raise DeadlineExceeded()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    return outcome["value"]  # type: ignore[return-value]  # set by a job that returned
