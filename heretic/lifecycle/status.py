"""`heretic status`: find a run's state from an output or study folder and describe it.

Guaranteed: read-only (except `clear_failures`), works while the run is going (files are
replaced atomically) and after it ended. Liveness comes from the study lock, not from PIDs
(reused across container restarts) or the age of progress.json: a run holds the lock's flock
for its whole life and the kernel drops it when the process dies, SIGKILL included, so a run
that is not done, failed or interrupted and whose lock nobody holds was killed.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from heretic.errors import ExitCode, StudyError
from heretic.lifecycle.state import DONE_FILE, PROGRESS_FILE, RunState
from heretic.statefiles import STUDY_LOCK, lock_is_held

STALE_AFTER_S = 15 * 60


def locate(folder: Path) -> RunState:
    """DIR may be an output folder (DIR/study/...) or the study folder itself."""
    folder = Path(folder)
    for candidate in (folder / "study", folder):
        if (candidate / PROGRESS_FILE).is_file() or (candidate / DONE_FILE).is_file():
            return RunState(candidate)
    raise StudyError(
        f"No heretic run state in {folder} (looked for {PROGRESS_FILE} and {DONE_FILE} in "
        f"{folder / 'study'} and {folder}).",
        "Pass the output folder of a run (default: heretic-output, /workspace/output in the "
        "container) or its study folder.",
    )


def tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except OSError:
        return []


def _fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def _fmt_value(value: Any) -> str:
    """Floats (KL divergences near 1e-6) with 3 significant digits, the rest as they are."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def summary(state: RunState, log_lines: int = 5) -> dict[str, Any]:
    """Everything `heretic status --json` prints."""
    data = state.read()
    progress = data["progress"]
    updated = progress.get("updated_ts")
    data["age_s"] = None if updated is None else round(time.time() - float(updated), 1)
    data["lock_held"] = lock_is_held(state.study_dir / STUDY_LOCK)
    data["state"] = _verdict(data, (state.study_dir / STUDY_LOCK).is_file())
    data["log_file"] = str(state.log_path)
    data["log_tail"] = tail(state.log_path, log_lines)
    return data


def _verdict(data: dict[str, Any], has_lock: bool) -> str:
    if data["done"] is not None:
        return "done"
    phase = str(data["progress"].get("phase", "unknown"))
    if phase in ("failed", "interrupted"):
        return phase
    if has_lock and not data["lock_held"]:
        return (
            "stopped (no process holds the study lock: the run was killed or its machine went away)"
        )
    age = data.get("age_s")
    if age is not None and age > STALE_AFTER_S:
        return "stalled (no update for " + _fmt_duration(age) + ")"
    return "running"


def render(data: dict[str, Any]) -> str:
    """The human form of `summary`."""
    p, done = data["progress"], data["done"]
    out = [f"Study folder: {data['study_dir']}", f"State: {data['state']}"]
    if p.get("phase"):
        msg = f" ({p['message']})" if p.get("message") else ""
        out.append(f"Phase: {p['phase']}{msg}, updated {_fmt_duration(data['age_s'])} ago")
    trials = p.get("trials") or {}
    if trials:
        # An ETA is only meaningful while something is running.
        eta = f", ETA {_fmt_duration(trials.get('eta_s'))}" if data["state"] == "running" else ""
        out.append(f"Trials: {trials.get('completed', 0)} of {trials.get('requested', '?')}{eta}")
        if trials.get("best"):
            best = ", ".join(f"{k}={_fmt_value(v)}" for k, v in trials["best"].items())
            out.append(f"Best so far: {best}")
    if p.get("attempts"):
        out.append(
            f"Starts: {p['attempts']} (last pid {p.get('pid', '?')} on {p.get('host', '?')})"
        )
    for failure in (p.get("failures") or [])[-3:]:
        what = "Interrupted" if failure.get("exit_code") == ExitCode.INTERRUPTED else "Failure"
        out.append(
            f"{what} at {failure.get('at')}: exit {failure.get('exit_code')}: "
            f"{failure.get('message')}"
        )
    if p.get("after_failure") and done is None:
        out.append(
            f"On failure ({p['after_failure'].get('policy')}): {p['after_failure'].get('message')}"
        )
    if done is not None:
        out.append(f"Finished: {done.get('finished_at', '?')}")
        out.append(f"Output: {done.get('output_dir', '?')}")
        if done.get("upload_url"):
            out.append(f"Uploaded: {done['upload_url']}")
        if done.get("shutdown"):
            out.append(f"Shutdown: {done['shutdown'].get('message')}")
    if data["log_tail"]:
        out.append(f"Last log lines ({data['log_file']}):")
        out += [f"  {line}" for line in data["log_tail"]]
    return "\n".join(out)
