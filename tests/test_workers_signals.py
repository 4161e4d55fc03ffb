"""`--workers 2` and a SIGTERM to the whole process group, as tini -g sends it in the image
(and a terminal sends Ctrl-C): every trial in flight finishes and is kept, and the next start
ends with exactly the requested trials. Before the fix the workers got the group's signal and
then the parent's own, took the second as "abandon now" and failed their trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from optuna.trial import TrialState
from test_run_cli import HERETIC, _all_trials, run_cli, wait_for

from heretic.run.worker_pool import WorkerGroup


def _owners(study_dir) -> set[str]:
    try:
        trials = _all_trials(study_dir)
    except Exception:  # the journal does not exist yet
        return set()
    return {
        t.user_attrs["heretic_owner"].split(":")[1]
        for t in trials
        if t.state == TrialState.COMPLETE
    }


@pytest.mark.slow
def test_group_sigterm_keeps_every_trial_in_flight(demo_model_dir, cli_env, tmp_path) -> None:
    out, n = tmp_path / "out", 150
    args = ["run", "--trials", str(n), "--workers", "2", "--output", str(out)]
    # Its own session, so that killpg reaches heretic and everything in its group, like tini -g.
    proc = subprocess.Popen(
        HERETIC + args,
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
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
    # A real child that says "got" for every SIGTERM and leaves when its stdin closes.
    code = (
        "import signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda s, f: print('got', flush=True))\n"
        "print('ready', flush=True)\nsys.stdin.read()\nprint('bye', flush=True)\n"
    )

    def child() -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        return proc

    asked = child()
    group = WorkerGroup([asked])
    group.forward(abandon=False)  # the parent's first signal, passed on
    assert asked.stdout.readline().strip() == "got"
    group.forward(abandon=True)  # its second
    assert asked.stdout.readline().strip() == "got"
    asked.stdin.close()  # let it leave, then end the run: it was asked, nothing more is sent
    group.stop(timeout_s=30)
    assert asked.stdout.read().split() == ["bye"] and group.requests_sent == 2

    never = child()
    group = WorkerGroup([never])
    stopping = threading.Thread(target=group.stop, kwargs={"timeout_s": 30})
    stopping.start()  # never asked before: exactly one request, then it waits for the exit
    assert never.stdout.readline().strip() == "got"
    never.stdin.close()
    stopping.join(timeout=60)
    assert never.stdout.read().split() == ["bye"] and group.requests_sent == 1
