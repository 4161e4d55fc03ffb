"""One failure policy inside the container, whatever the provider: bounded retries with
back-off, the `--max-hours` deadline, and the back-off of a self-termination that was refused.

Why here and not in the provider's restart policy: Vast.ai never restarts an exited container
(its contract, GPU included, bills on until stopped or destroyed), and RunPod restarts one for
ever without back-off. So a failure a retry may cure (RETRYABLE: an internal error, an upload,
network or storage error, out of memory, which is retried with half the batch) is retried
here `retries` times, waiting `retry_backoff_s`, then twice that, and so on; when the retries
are spent, or the failure is terminal, the caller applies `--on-failure` on every provider. A
provider restart is only the second line of defence (the restart-loop guard bounds it).
Never ending the rental: a held lock (another run owns the study; stopping the machine would
kill it) and an interruption (exit 75: whoever sent the signal decides about the machine).

The deadline counts from HERETIC_LAUNCHED_AT (set by `heretic cloud launch` and the launch
scripts, so provisioning and restarts count) or else from this process's start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from heretic.cloud.records import LAUNCHED_AT_ENV as LAUNCHED_AT_ENV
from heretic.cloud.records import LAUNCHED_BY_ENV as LAUNCHED_BY_ENV
from heretic.errors import ExitCode

MAX_BACKOFF_S = 3600.0

RETRYABLE = frozenset(
    {
        ExitCode.INTERNAL,
        ExitCode.UPLOAD,
        ExitCode.OUT_OF_MEMORY,
        ExitCode.CLOUD,
        ExitCode.STORAGE,
    }
)
NEVER_ENDS_RENTAL = frozenset({ExitCode.OK, ExitCode.LOCKED, ExitCode.INTERRUPTED})

T = TypeVar("T")
Sleep = Callable[[float], None]
Clock = Callable[[], float]


def is_retryable(exit_code: int) -> bool:
    return exit_code in RETRYABLE


def ends_rental(exit_code: int) -> bool:
    """After the in-container retries: does this exit end the rental (`--on-failure`)?"""
    return int(exit_code) not in NEVER_ENDS_RENTAL


def backoff(attempt: int, base_s: float, cap_s: float = MAX_BACKOFF_S) -> float:
    """The wait before retry `attempt` (1-based): base, 2 x base, 4 x base, ... capped."""
    return float(min(max(base_s, 0.0) * 2.0 ** max(attempt - 1, 0), cap_s))


def launched_by_heretic(environ: Mapping[str, str]) -> bool:
    return bool(environ.get(LAUNCHED_BY_ENV, "").strip())


def _launched_at(environ: Mapping[str, str]) -> float | None:
    raw = environ.get(LAUNCHED_AT_ENV, "").strip()
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None  # a damaged marker: count from this process's start instead


@dataclass(frozen=True)
class Deadline:
    """`--max-hours`: the time after which this machine must not bill any more."""

    expires_at: float | None
    max_hours: float | None = None
    clock: Clock = time.time

    @classmethod
    def of(
        cls, max_hours: float | None, environ: Mapping[str, str], clock: Clock = time.time
    ) -> Deadline:
        if not max_hours:
            return cls(None, None, clock)
        start = _launched_at(environ) or clock()
        return cls(start + max_hours * 3600.0, max_hours, clock)

    def remaining(self) -> float | None:
        return None if self.expires_at is None else self.expires_at - self.clock()

    def expired(self) -> bool:
        left = self.remaining()
        return left is not None and left <= 0

    def describe(self) -> str:
        return f"--max-hours {self.max_hours:g}"


@dataclass(frozen=True)
class RetryPlan:
    retries: int
    backoff_s: float
    batch_size: int = 0
    max_batch_size: int = 64

    def should_retry(self, exit_code: int, done: int) -> bool:
        return is_retryable(exit_code) and done < self.retries

    def delay(self, attempt: int) -> float:
        return backoff(attempt, self.backoff_s)

    def overrides(self, exit_code: int, previous: Mapping[str, Any]) -> dict[str, Any]:
        """Settings for the next attempt: after an out-of-memory, half the batch (an explicit
        batch_size halves, the automatic search gets half the upper bound)."""
        out = dict(previous)
        if exit_code == ExitCode.OUT_OF_MEMORY:
            batch = int(out.get("batch_size", self.batch_size))
            if batch > 0:
                out["batch_size"] = max(1, batch // 2)
            upper = int(out.get("max_batch_size", self.max_batch_size))
            out["max_batch_size"] = max(1, upper // 2)
        return out


class Watchdog:
    """Calls `fire` once when the deadline passes, from a daemon thread; `cancel` ends it."""

    def __init__(self, deadline: Deadline, fire: Callable[[], object]) -> None:
        self._deadline = deadline
        self._fire = fire
        self._cancel = threading.Event()
        self.fired = threading.Event()
        self._thread = threading.Thread(target=self._wait, name="heretic-deadline", daemon=True)

    def start(self) -> Watchdog:
        if self._deadline.expires_at is not None:
            self._thread.start()
        return self

    def _wait(self) -> None:
        while not self._cancel.is_set():
            left = self._deadline.remaining()
            if left is None:
                return
            if left <= 0:
                try:
                    self._fire()
                finally:
                    self.fired.set()
                return
            self._cancel.wait(min(left, 60.0))  # re-read the clock at least every minute

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)


def keep_trying(
    attempt: Callable[[], T],
    ok: Callable[[T], bool],
    *,
    base_s: float,
    sleep: Sleep,
    on_failure: Callable[[int, T], None] = lambda n, r: None,
    max_tries: int | None = None,
) -> T:
    """Call `attempt` until `ok`, waiting base, 2 x base, ... (capped at an hour) in between;
    for ever unless `max_tries`. For a finished run whose machine refuses to end: the process
    stays (and retries) instead of exiting into the provider's restart loop."""
    tries = 0
    while True:
        result = attempt()
        tries += 1
        if ok(result) or (max_tries is not None and tries >= max_tries):
            return result
        on_failure(tries, result)
        sleep(backoff(tries, base_s))
