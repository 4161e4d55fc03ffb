"""`--workers 2` and a SIGTERM to the whole process group, as tini -g sends it in the image
(and a terminal sends Ctrl-C): every trial in flight finishes and is kept, and the next start
ends with exactly the requested trials. Before the fix the workers got the group's signal and
then the parent's own, took the second as "abandon now" and failed their trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from optuna.trial import TrialState
from test_run_cli import HERETIC, _all_trials, run_cli, wait_for

from heretic.engine.workers import WorkerGroup


def _owners(study_dir) -> set[str]:
    try:
        trials = _all_trials(study_dir)
    except Exception:  # the journal does not exist yet
        return set()
    return {t.user_attrs["heretic_owner"].split(":")[1] for t in trials
            if t.state == TrialState.COMPLETE}


@pytest.mark.slow
def test_group_sigterm_keeps_every_trial_in_flight(demo_model_dir, cli_env, tmp_path) -> None:
    out, n = tmp_path / "out", 150
    args = ["run", "--trials", str(n), "--workers", "2", "--output", str(out)]
    # Its own session, so that killpg reaches heretic and everything in its group, like tini -g.
    proc = subprocess.Popen(HERETIC + args, env=cli_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: len(_owners(out / "study")) >= 2, timeout=240, proc=proc)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 75, err[-3000:]
    assert "abandoning" not in err, err[-3000:]
    states = [t.state for t in _all_trials(out / "study")]
    assert TrialState.FAIL not in states and TrialState.RUNNING not in states, err[-3000:]
    assert states.count(TrialState.COMPLETE) < n
    again = run_cli(args, cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    done = [t for t in _all_trials(out / "study") if t.state == TrialState.COMPLETE]
    assert len(done) == n


def test_worker_group_sends_each_stop_request_once() -> None:
    # Real child processes that count the SIGTERMs they receive and report on exit.
    code = ("import signal, sys, time\nn = 0\n"
            "def h(s, f):\n    global n\n    n += 1\n"
            "signal.signal(signal.SIGTERM, h)\nprint('ready', flush=True)\n"
            "while n < int(sys.argv[1]):\n    time.sleep(0.01)\nprint(n, flush=True)\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, want], stdout=subprocess.PIPE,
                              text=True) for want in ("1", "2")]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    group = WorkerGroup(procs[1:])
    group.forward(abandon=False)  # the parent's first signal, passed on
    group.forward(abandon=True)  # its second
    group.stop(timeout_s=30)  # the end of the run: no third request
    assert procs[1].stdout.read().strip() == "2"
    one = WorkerGroup(procs[:1])
    one.stop(timeout_s=30)  # never asked before: exactly one request
    assert procs[0].stdout.read().strip() == "1"
