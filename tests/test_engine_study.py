"""The study loop: exact trial counts, re-runs of abandoned trials, and RDB heartbeats for
trials of machines that vanished."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from heretic.engine.study import OWNER_KEY, claim_trial, make_storage, open_study, run_trials


def objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    return x, 1.0 - x


def test_run_trials_ends_at_exactly_n_and_resumes(tmp_path) -> None:
    study = open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=2)
    assert run_trials(study, tmp_path, 5, objective) == 5
    study = open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=2)
    assert run_trials(study, tmp_path, 5, objective) == 0  # already complete
    assert run_trials(study, tmp_path, 8, objective) == 3
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 8 and len({t.params["x"] for t in done}) == 8


def test_a_dead_local_owner_is_failed_and_its_parameters_rerun(tmp_path) -> None:
    study = open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=2)
    orphan = study.ask()
    x = orphan.suggest_float("x", 0.0, 1.0)
    import socket

    orphan.set_user_attr(OWNER_KEY, f"{socket.gethostname()}:999999:0.00")  # no such process
    trial = claim_trial(study, tmp_path, 3)
    assert trial is not None
    assert trial.suggest_float("x", 0.0, 1.0) == x
    states = {t.number: t.state for t in study.get_trials()}
    assert states[orphan.number] == TrialState.FAIL


def test_rdb_heartbeat_fails_a_vanished_machines_trial_and_reruns_it(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_storage(tmp_path, url, heartbeat_s=1, grace_s=1)
    study = open_study(
        tmp_path, name="s", storage_url=url, seed=0, startup_trials=2, storage=storage
    )
    lost = study.ask()
    x = lost.suggest_float("x", 0.0, 1.0)
    lost.set_user_attr(OWNER_KEY, "another-machine:42:1.00")  # cannot be checked from here
    storage.record_heartbeat(lost._trial_id)
    time.sleep(2.2)  # the grace period itself is what is being tested
    trial = claim_trial(study, tmp_path, 3)
    assert trial is not None
    assert study.get_trials()[lost.number].state == TrialState.FAIL
    assert trial.suggest_float("x", 0.0, 1.0) == x  # the same parameters, run again


def test_heartbeats_are_recorded_while_a_trial_runs(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = make_storage(tmp_path, url, heartbeat_s=1, grace_s=1)
    study = open_study(
        tmp_path, name="s", storage_url=url, seed=0, startup_trials=2, storage=storage
    )

    def slow(trial: optuna.Trial) -> tuple[float, float]:
        time.sleep(2.5)  # a trial longer than the grace period must not be declared stale
        optuna.storages.fail_stale_trials(study)
        assert study.get_trials()[trial.number].state == TrialState.RUNNING
        return objective(trial)

    assert run_trials(study, tmp_path, 1, slow) == 1
