"""Graceful stop on SIGTERM/SIGINT: docker stop, a provider's preemption notice, or Ctrl-C.

First signal: set a flag; the run stops at the next safe point of its current phase (the
current trial, batch of the residual pass or of the verification, training step of the demo
model, the upload at once: `WHAT_HAPPENS`, which the message quotes), the journal is flushed by
Optuna as usual, and `check()` raises InterruptedRun (exit 75) so the next start resumes.
Second signal: abandon now by raising KeyboardInterrupt in the main thread.
Listeners (`subscribe`) hear every stop request as it happens, with abandon=True for the
second: the run forwards them to its worker processes, which run in their own process group so
that a group-wide signal (tini -g, Ctrl-C) reaches each worker exactly once, through this.
Guaranteed: the previous handlers are restored on exit. Not guaranteed: anything when entered
outside the main thread (Python only delivers signals there); then it installs nothing and
`requested` stays False. SIGKILL cannot be caught: `docker stop -t` must allow one trial.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from heretic.errors import InterruptedRun
from heretic.phases import Phase

log = logging.getLogger("heretic.lifecycle")
_SIGNALS = (signal.SIGTERM, signal.SIGINT)

# What a first SIGTERM/SIGINT does in each phase (the lifecycle sets `phase`); docs/run.md
# ("Stopping a run") shows the same table.
WHAT_HAPPENS: dict[Phase, str] = {
    Phase.START: "stopping before the model loads",
    Phase.PROMPTS: "stopping before the model loads",
    Phase.LOAD: "stopping once the model has loaded (training the demo model stops at its next "
    "step; nothing half-trained is kept)",
    Phase.RESIDUALS: "stopping after the current batch of the residual pass (the next start "
    "computes the directions again)",
    Phase.BASE_EVALUATION: "stopping after the base model's evaluation, before the first trial",
    Phase.SEARCH: "stopping after the current trial (send it again to abandon the trial now); "
    "the next start resumes the study",
    Phase.SELECT: "stopping after the current batch of the verification; the search is saved and "
    "the next start verifies and exports again",
    Phase.VERIFY: "stopping after the current batch of the verification; the search is saved and "
    "the next start verifies and exports again",
    Phase.EXPORT: "stopping once the export is written (a half-written model is never left); an "
    "--upload is not started",
    Phase.UPLOAD: "stopping the upload now; the local output is kept, and `heretic upload` (or the "
    "same command) uploads it again",
}


def _say(message: str) -> None:
    """To the terminal at once (os.write: no buffered stream to re-enter) and to the log."""
    with contextlib.suppress(OSError):  # no stderr (detached): the log line still has it
        os.write(2, f"\n{message}\n".encode())
    log.warning(message)


class GracefulStop:
    """Context manager: `with GracefulStop() as stop: ... stop.check()` between trials."""

    def __init__(self, phase: Phase = Phase.SEARCH) -> None:
        self.phase = phase  # what is running now: a key of WHAT_HAPPENS
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self._listeners: list[Callable[[bool], None]] = []
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, name: str = "request") -> None:
        """Ask for a stop without a signal (tests, a watchdog, a time limit)."""
        self.signal_name = self.signal_name or name
        self._event.set()
        self._tell(abandon=False)

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(abandon)` on every later stop request; returns the unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _tell(self, abandon: bool) -> None:
        for listener in list(self._listeners):
            try:
                listener(abandon)
            except Exception as exc:  # a listener must not turn a stop into a crash
                log.warning("Stop listener failed: %s", exc)

    def check(self) -> None:
        if self.requested:
            raise InterruptedRun(
                f"Stopped on {self.signal_name}; the study is saved.",
                "Start the same command on the same folder again to resume.",
            )

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested:
            _say(f"Second {name}: stopping now (a trial under way is abandoned and re-run).")
            self._tell(abandon=True)
            raise KeyboardInterrupt
        self.request(name)
        _say(f"{name} received: {self.what_happens()}.")

    def what_happens(self) -> str:
        """What a first stop request does now, in words (for the message and the log)."""
        return WHAT_HAPPENS.get(self.phase, "stopping at the next safe point")

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is not threading.main_thread():
            log.warning("Not in the main thread: SIGTERM/SIGINT keep their default handling.")
            return self
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
