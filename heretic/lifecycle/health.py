"""The container's health: is a run that is in its trials still making progress?

`heretic health` is the image's HEALTHCHECK. progress.json is rewritten after every completed
trial, so during the search phase its age says whether trials still complete. A trial of a
large model takes minutes, so "stale" means older than `min_age_s` (30 min) or three times the
run's own average trial time (from its ETA), whichever is longer. Every other phase (loading,
directions, export, upload), a finished, failed or not yet started run is healthy: those have
their own exit paths, and a container in them is not hung in a way a restart would fix.
Guaranteed: read-only; never imports torch (it runs every few minutes next to the run).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heretic.lifecycle.state import PROGRESS_FILE, RunState
from heretic.phases import Phase

MIN_AGE_S = 30 * 60
TRIAL_FACTOR = 3.0


@dataclass(frozen=True)
class Health:
    ok: bool
    message: str


def allowed_age(trials: dict[str, Any], min_age_s: float) -> float:
    """How old progress.json may be during the search: the floor, or 3 average trials."""
    remaining = int(trials.get("requested") or 0) - int(trials.get("completed") or 0)
    eta = trials.get("eta_s")
    if eta is None or remaining <= 0:
        return min_age_s
    return max(min_age_s, TRIAL_FACTOR * float(eta) / remaining)


def check_health(
    study_dir: Path, *, now: float | None = None, min_age_s: float = MIN_AGE_S
) -> Health:
    state = RunState(study_dir)
    if not state.progress_path.is_file():
        return Health(True, f"no {PROGRESS_FILE} in {study_dir} yet: not started")
    progress = state.read()["progress"]
    phase = progress.get("phase", "unknown")
    if phase != Phase.SEARCH:
        return Health(True, f"phase {phase}")
    updated = progress.get("updated_ts")
    if updated is None:
        return Health(True, "phase search, no update time recorded")
    age = (time.time() if now is None else now) - float(updated)
    trials = progress.get("trials") or {}
    limit = allowed_age(trials, min_age_s)
    done = f"{trials.get('completed', 0)}/{trials.get('requested', '?')} trials"
    if age > limit:
        return Health(
            False,
            f"no trial completed for {age / 60:.0f} min during the search "
            f"({done}; allowed {limit / 60:.0f} min): hung or too slow",
        )
    return Health(True, f"searching, {done}, last update {age / 60:.1f} min ago")
