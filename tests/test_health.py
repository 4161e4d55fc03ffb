"""`heretic health`, the image's HEALTHCHECK: unhealthy only when the search stops moving."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from heretic.lifecycle.health import MIN_AGE_S, allowed_age, check_health
from heretic.lifecycle.state import RunState


def searching(study: Path, completed: int, requested: int, eta_s: float | None) -> RunState:
    state = RunState(study)
    state.begin_attempt()
    state.set_phase("search")
    state.set_trials(completed, requested, eta_s, None)
    return state


def test_fresh_progress_is_healthy_and_a_stalled_search_is_not(tmp_path: Path) -> None:
    state = searching(tmp_path, 10, 200, eta_s=190 * 60.0)  # one minute per trial
    now = time.time()
    assert check_health(tmp_path, now=now + 60).ok
    assert check_health(tmp_path, now=now + MIN_AGE_S - 60).ok
    stalled = check_health(tmp_path, now=now + MIN_AGE_S + 60)
    assert not stalled.ok and "10/200 trials" in stalled.message
    state.set_trials(11, 200, 189 * 60.0, None)  # a trial completed: healthy again
    assert check_health(tmp_path, now=time.time() + 60).ok


def test_slow_trials_get_three_trials_of_grace() -> None:
    trials = {"completed": 10, "requested": 20, "eta_s": 10 * 40 * 60.0}  # 40 min per trial
    assert allowed_age(trials, MIN_AGE_S) == 3 * 40 * 60
    assert allowed_age({"completed": 5, "requested": 5, "eta_s": 0}, MIN_AGE_S) == MIN_AGE_S
    assert allowed_age({}, 600) == 600


def test_other_phases_and_no_state_are_healthy(tmp_path: Path) -> None:
    assert check_health(tmp_path / "nothing").ok  # before the first start wrote anything
    state = RunState(tmp_path)
    state.begin_attempt()
    state.set_phase("load")
    assert check_health(tmp_path, now=time.time() + 10 * MIN_AGE_S).ok  # a long load
    state.record_failure(5, "no model")
    assert check_health(tmp_path, now=time.time() + 10 * MIN_AGE_S).ok


def test_the_command_exits_1_when_unhealthy(tmp_path: Path) -> None:
    searching(tmp_path / "study", 3, 50, eta_s=47 * 1.0)
    cmd = [sys.executable, "-m", "heretic", "health", str(tmp_path), "--min-age", "60"]
    fresh = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0 and fresh.stdout.startswith("healthy: searching, 3/50")
    progress = tmp_path / "study" / "progress.json"
    data = json.loads(progress.read_text())
    progress.write_text(json.dumps({**data, "updated_ts": time.time() - 3600}))  # an hour ago
    stale = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1, stale.stdout
    assert stale.stdout.startswith("unhealthy: no trial completed for 60 min")
