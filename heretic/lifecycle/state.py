"""Run state kept in the study folder, so a restarted process (or `heretic status`) can read it.

Files (all in the study folder, next to the Optuna journal):
- progress.json: phase, trials k of n, ETA, best so far, attempts and failures. Rewritten
  atomically on every change; best-effort (a full disk is logged, not fatal), because the
  journal, not this file, is what a resume relies on.
- DONE.json: the done marker, written atomically and LAST, only when the run has finished
  (output exported and, when asked, uploaded). Its presence makes a restart a no-op.
Guaranteed: neither file is ever half-written. Not guaranteed: progress.json is current to the
second (several worker processes sharing one study overwrite each other's view; last wins).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, TypedDict

from heretic.atomic import read_json, write_json
from heretic.errors import ExitCode, StudyError
from heretic.phases import Phase
from heretic.secrets import redact

PROGRESS_FILE = "progress.json"
DONE_FILE = "DONE.json"
LOG_FILE = "heretic.log"
MAX_FAILURES_KEPT = 20

log = logging.getLogger("heretic.lifecycle")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class BestSoFar(TypedDict):
    """progress.json's "best": the trial the selection policy would take now."""

    trial: int
    refusals: int
    kl_divergence: float
    meets_policy: bool


class RunState:
    """Reads and writes progress.json and DONE.json in one study folder."""

    def __init__(self, study_dir: Path) -> None:
        self.study_dir = Path(study_dir)
        self.progress_path = self.study_dir / PROGRESS_FILE
        self.done_path = self.study_dir / DONE_FILE
        self.log_path = self.study_dir / LOG_FILE

    # --- progress -------------------------------------------------------------------------
    def _progress(self) -> dict[str, Any]:
        return read_json(self.progress_path) or {}

    def _update(self, **changes: Any) -> None:
        data = self._progress()
        data.update(changes)
        data["updated_at"] = now_iso()
        data["updated_ts"] = time.time()
        try:
            write_json(self.progress_path, data)
        except OSError as exc:  # e.g. ENOSPC: the run goes on, the journal is what matters
            log.warning("Could not write %s: %s", self.progress_path, exc)

    def begin_attempt(self) -> int:
        """Record that a process starts (or restarts) on this folder; returns the attempt number."""
        attempts = int(self._progress().get("attempts", 0)) + 1
        self._update(
            attempts=attempts,
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=now_iso(),
            phase=Phase.STARTING,
            message="",
        )
        return attempts

    def set_phase(self, phase: Phase, message: str = "") -> None:
        self._update(phase=phase, message=redact(message))

    def set_trials(
        self, completed: int, requested: int, eta_s: float | None, best: BestSoFar | None
    ) -> None:
        previous = int(self._progress().get("trials", {}).get("completed", 0) or 0)
        changes: dict[str, Any] = {
            "trials": {
                "completed": completed,
                "requested": requested,
                "eta_s": None if eta_s is None else round(float(eta_s), 1),
                "best": best,
            },
        }
        if completed > previous:  # progress was made: earlier failures are not a loop
            changes["failure_streak"] = 0
        self._update(**changes)

    def record_failure(self, exit_code: int, message: str) -> None:
        data = self._progress()
        failures = list(data.get("failures", []))
        failures.append(
            {
                "exit_code": int(exit_code),
                "message": redact(message)[:2000],
                "at": now_iso(),
                "pid": os.getpid(),
            }
        )
        streak = int(data.get("failure_streak", 0))
        if int(exit_code) != ExitCode.INTERRUPTED:  # preemption is not the run's fault
            streak += 1
        self._update(
            failures=failures[-MAX_FAILURES_KEPT:],
            failure_streak=streak,
            phase=Phase.FAILED if int(exit_code) != ExitCode.INTERRUPTED else Phase.INTERRUPTED,
            message=redact(message)[:500],
            exit_code=int(exit_code),
        )

    def failure_streak(self) -> int:
        """Failed starts (interruptions excluded) since the last completed trial or success."""
        return int(self._progress().get("failure_streak", 0))

    def record_after_failure(self, info: dict[str, Any]) -> None:
        """What --on-failure did to the machine (only into an existing progress.json)."""
        if self.progress_path.is_file():
            self._update(after_failure=info)

    def clear_failures(self) -> None:
        self._update(failure_streak=0)

    # --- done marker ----------------------------------------------------------------------
    def mark_done(self, info: dict[str, Any]) -> None:
        """Write DONE.json (atomically, last). Raises StudyError when it cannot be written."""
        payload = {"finished_at": now_iso(), **info}
        self._update(phase=Phase.DONE, message="", failure_streak=0)
        try:
            write_json(self.done_path, payload)
        except OSError as exc:
            raise StudyError(
                f"Could not write the done marker {self.done_path}: {exc}.",
                "Free disk space on that volume; the results themselves are already written.",
            ) from exc

    def is_done(self) -> bool:
        return self.done_info() is not None

    def done_info(self) -> dict[str, Any] | None:
        return read_json(self.done_path)

    def read(self) -> dict[str, Any]:
        """Progress and done marker together: {"study_dir", "progress", "done"}."""
        return {
            "study_dir": str(self.study_dir),
            "progress": self._progress(),
            "done": self.done_info(),
        }


def guard_restart_loop(state: RunState, limit: int = 3) -> None:
    """Stop a restart loop: raise StudyError once `limit` starts in a row failed."""
    streak = state.failure_streak()
    if streak < limit:
        return
    last = (state.read()["progress"].get("failures") or [{}])[-1]
    raise StudyError(
        f"The last {streak} starts on {state.study_dir} failed without completing a trial "
        f"(last: exit code {last.get('exit_code', '?')}: {last.get('message', 'no message')}); "
        "not trying again so a restart loop does not burn the rental.",
        f"Read {state.log_path}, fix the cause, then run `heretic status "
        f"{state.study_dir} --clear-failures` (the study itself is kept) and start again.",
    )
