"""Scale-out on a real PostgreSQL server (tests/postgres_server.py): two `heretic run
--set search_only=true` processes that present themselves as two machines (HERETIC_HOST_ID)
share one study; one is SIGKILLed in the middle of a trial, whose heartbeat goes stale, so the
other fails it and re-runs it; the study ends with exactly N completed trials; a machine with
other search settings is refused; a finishing run selects and exports. The password, given on
the command line, in the environment and in a config file, appears in no file, log, lock,
process record or process title.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_run_cli import run_cli, start_cli

from heretic.errors import ExitCode, StorageError
from heretic.preflight.storage import check_storage

PASSWORD = "Pg-Secret-" + os.urandom(6).hex()
# A trial's parameters: four kernel parameters per component (attention, mlp), the direction
# scope and index. Killed once it holds them all, the trial is in its evaluation, and its
# re-run must use the same parameters.
ALL_PARAMS = 4 * 2 + 2


def _study(url: str) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=optuna.storages.RDBStorage(url))


def _running_trial_of(study: optuna.Study, host: str) -> int | None:
    """A trial of `host` that is evaluating (RUNNING, every parameter drawn)."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        mine = str(trial.user_attrs.get("heretic_owner", "")).startswith(f"{host}:")
        if mine and len(trial.params) == ALL_PARAMS:
            return trial.number
    return None


def _kill_mid_trial(proc: subprocess.Popen, url: str, host: str, timeout: float = 240) -> int:
    """SIGKILL `proc` while it runs a trial: freeze it (SIGSTOP), check in the database that
    its trial is still RUNNING, then kill. Returns the killed trial's number."""
    deadline = time.monotonic() + timeout
    study = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"machine {host} ended before it was killed: {proc.communicate()[1][-3000:]}"
            )
        try:
            study = study or _study(url)
        except KeyError:  # the study does not exist yet
            time.sleep(0.05)  # polling interval of a condition with a deadline
            continue
        if _running_trial_of(study, host) is not None:
            proc.send_signal(signal.SIGSTOP)
            number = _running_trial_of(study, host)
            if number is not None:
                # The URL was on its command line: the process re-executed itself without it.
                assert PASSWORD.encode() not in _cmdline(proc.pid)
                proc.kill()
                proc.wait()
                return number
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.02)  # polling interval of a condition with a deadline
    raise AssertionError(f"machine {host} never ran a trial")


def _cmdline(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def _assert_password_nowhere(roots: list[Path], texts: list[str]) -> None:
    for text in texts:
        assert PASSWORD not in text
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_two_machines_share_a_postgres_study_and_a_killed_trial_is_rerun(
    postgres, demo_model_dir, cli_env, tmp_path
) -> None:
    url = postgres.create_database("scaleout", "heretic_worker", PASSWORD)
    n, out, runtime = 10, tmp_path / "out", tmp_path / "runtime"
    env = dict(
        cli_env,
        XDG_RUNTIME_DIR=str(runtime),
        HERETIC_HEARTBEAT_INTERVAL_S="1",
        HERETIC_HEARTBEAT_GRACE_S="3",
    )
    common = ["run", "--trials", str(n), "--study-name", "shared", "--set", "search_only=true"]
    # Machine A has the URL on its command line, machine B in its environment.
    a = start_cli(
        [*common, "--storage", url, "--output", str(out / "a")],
        dict(env, HERETIC_HOST_ID="machine-a"),
    )
    b = start_cli(
        [*common, "--output", str(out / "b")],
        dict(env, HERETIC_HOST_ID="machine-b", HERETIC_STORAGE=url),
    )
    try:
        killed = _kill_mid_trial(a, url, "machine-a")
        assert PASSWORD.encode() not in _cmdline(b.pid)
        b_out, b_err = b.communicate(timeout=600)
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
    a_out, a_err = a.communicate()
    assert b.returncode == 0, b_err[-3000:]
    assert "Search-only" in b_err and "login accepted" in b_err

    trials = _study(url).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed].state == TrialState.FAIL
    reruns = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE
    assert reruns[0].params == by_number[killed].params
    assert reruns[0].user_attrs["heretic_owner"].startswith("machine-b:")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == n  # exact across machines: the claim holds an advisory lock
    assert len({t.number for t in complete}) == n

    # A third machine with other search settings, the URL in a config file: refused.
    config = tmp_path / "conf" / "heretic.toml"
    config.parent.mkdir()
    config.write_text(f'storage = "{url}"\n')
    other = run_cli(
        [
            *common,
            "--config",
            str(config),
            "--output",
            str(out / "c"),
            "--set",
            "max_weight=0.5,0.6",
        ],
        dict(env, HERETIC_HOST_ID="machine-c"),
    )
    assert other.returncode == ExitCode.STUDY and "max_weight" in other.stderr

    # The finishing run selects from the first N trials and exports.
    final = run_cli(
        [
            "run",
            "--trials",
            str(n),
            "--study-name",
            "shared",
            "--set",
            f"storage={url}",
            "--set",
            "kl_cap=100",
            "--output",
            str(out / "final"),
        ],
        env,
    )
    assert final.returncode == 0, final.stderr[-3000:]
    report = json.loads((out / "final" / "report.json").read_text())
    assert report["trials"] == {
        "requested": n,
        "completed": n,
        "stop_reason": f"all {n} requested trials ran",
    }
    assert (out / "final" / "model" / "config.json").is_file()
    assert report["settings"]["storage"].startswith("postgresql://heretic_worker:****@")

    _assert_password_nowhere(
        [out, runtime],
        [a_out, a_err, b_out, b_err, other.stdout, other.stderr, final.stdout, final.stderr],
    )


def test_storage_preflight_names_the_failure_in_seconds(postgres) -> None:
    url = postgres.create_database("preflight", "heretic_probe", PASSWORD)
    assert "login accepted" in check_storage(url)
    wrong_password = url.replace(PASSWORD, "not-" + PASSWORD)
    cases = {
        wrong_password: "refused the login",
        url.rsplit("/", 1)[0] + "/missing_db": "no such database",
        url.replace(f":{postgres.port}/", ":1/"): "cannot be reached",
        url.replace("postgresql://", "postgresql+psycopg2://"): "driver that is not installed",
        url.replace("postgresql://", "redis://"): "not a database",
    }
    for bad, expected in cases.items():
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            check_storage(bad)
        assert time.monotonic() - started < 10
        text = caught.value.paragraph()
        assert expected in text and PASSWORD not in text, text
        assert caught.value.exit_code == ExitCode.STORAGE == 16


def test_a_bad_storage_login_stops_the_run_before_the_model_loads(
    postgres, demo_model_dir, cli_env, tmp_path
) -> None:
    url = postgres.create_database("badlogin", "heretic_bad", PASSWORD)
    wrong = url.replace(PASSWORD, PASSWORD + "-wrong")
    out, runtime = tmp_path / "out", tmp_path / "runtime"
    env = dict(cli_env, XDG_RUNTIME_DIR=str(runtime))
    result = run_cli(["run", "--trials", "3", "--storage", wrong, "--output", str(out)], env)
    assert result.returncode == ExitCode.STORAGE, result.stderr[-2000:]
    assert "refused the login" in result.stderr and "Traceback" not in result.stderr
    assert "residuals" not in result.stderr  # stopped before any weight loaded
    _assert_password_nowhere([out, runtime], [result.stdout, result.stderr])
