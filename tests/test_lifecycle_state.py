"""Run state on disk: progress.json, DONE.json, failures and the restart-loop guard, status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heretic.cli.app import app
from heretic.errors import ExitCode, StudyError
from heretic.lifecycle.state import RunState, guard_restart_loop
from heretic.lifecycle.status import locate, render, summary
from heretic.preflight.lock import acquire_run_lock


def test_progress_round_trip(tmp_path: Path) -> None:
    state = RunState(tmp_path / "study")
    assert state.begin_attempt() == 1
    state.set_phase("search", "trial 3")
    state.set_trials(3, 200, 5400.0, {"trial": 2, "refusals": 4, "kl": 0.21})
    progress = state.read()["progress"]
    assert progress["phase"] == "search" and progress["message"] == "trial 3"
    assert progress["trials"] == {
        "completed": 3,
        "requested": 200,
        "eta_s": 5400.0,
        "best": {"trial": 2, "refusals": 4, "kl": 0.21},
    }
    assert state.read()["done"] is None and not state.is_done()
    assert state.begin_attempt() == 2
    # only the two state files, no temp files left behind
    assert sorted(p.name for p in (tmp_path / "study").iterdir()) == ["progress.json"]


def test_done_marker(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    state.mark_done({"output_dir": "/o", "upload_url": "https://hub/x"})
    info = state.done_info()
    assert info["upload_url"] == "https://hub/x" and "finished_at" in info
    assert state.is_done()
    assert json.loads((tmp_path / "DONE.json").read_text()) == info
    assert state.read()["progress"]["phase"] == "done"


def test_garbled_done_marker_is_not_done(tmp_path: Path) -> None:
    (tmp_path / "DONE.json").write_text("{half")
    assert not RunState(tmp_path).is_done()


def test_failures_streak_and_guard(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    state.record_failure(ExitCode.INTERRUPTED, "SIGTERM")
    assert state.failure_streak() == 0  # preemption does not count
    for _ in range(2):
        state.record_failure(ExitCode.OUT_OF_MEMORY, "CUDA out of memory")
    guard_restart_loop(state, limit=3)  # 2 < 3: allowed
    state.set_trials(1, 10, None, None)  # progress resets the streak
    assert state.failure_streak() == 0
    for _ in range(3):
        state.record_failure(ExitCode.INTERNAL, "boom")
    with pytest.raises(StudyError, match="last 3 starts"):
        guard_restart_loop(state, limit=3)
    state.clear_failures()
    guard_restart_loop(state, limit=3)
    assert len(state.read()["progress"]["failures"]) == 6  # all kept for status


def test_secrets_are_redacted_from_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = "hf_SecretSecretSecret123456"
    monkeypatch.setenv("HF_TOKEN", secret)
    state = RunState(tmp_path)
    state.set_phase("upload", f"using {secret}")
    state.record_failure(ExitCode.UPLOAD, f"401 for token {secret}")
    assert secret not in (tmp_path / "progress.json").read_text()


def test_full_disk_does_not_break_progress(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import heretic.lifecycle.state as state_mod

    def no_space(path: Path, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod, "write_json", no_space)
    state = RunState(tmp_path)
    state.set_phase("search")  # logged, not raised: the journal is what resumes the run
    with pytest.raises(StudyError, match="done marker"):
        state.mark_done({})


def test_locate_accepts_output_or_study_folder(tmp_path: Path) -> None:
    RunState(tmp_path / "out" / "study").set_phase("search")
    assert locate(tmp_path / "out").study_dir == tmp_path / "out" / "study"
    assert locate(tmp_path / "out" / "study").study_dir == tmp_path / "out" / "study"
    with pytest.raises(StudyError):
        locate(tmp_path / "nothing")


def test_render_shows_trials_and_upload(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    state.begin_attempt()
    state.set_trials(12, 200, 3720, {"refusals": 2, "kl": 0.18})
    state.log_path.write_text("line one\nline two\n")
    with acquire_run_lock(tmp_path):  # a live run holds its study lock
        text = render(summary(state))
    assert "State: running" in text and "Trials: 12 of 200, ETA 1h02m" in text
    assert "State: stopped" in render(summary(state))  # lock free: killed, seen at once
    assert "refusals=2, kl=0.18" in text and "  line two" in text
    state.mark_done({"output_dir": "/w/o", "upload_url": "https://hf.co/me/m"})
    text = render(summary(state))
    assert "State: done" in text and "Uploaded: https://hf.co/me/m" in text


def test_status_cli_json_and_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["status", str(tmp_path / "none")])
    assert missing.exit_code == ExitCode.STUDY
    state = RunState(tmp_path / "out" / "study")
    for _ in range(3):
        state.record_failure(ExitCode.INTERNAL, "boom")
    result = runner.invoke(app, ["status", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["state"] == "failed" and data["progress"]["failure_streak"] == 3
    cleared = runner.invoke(app, ["status", str(tmp_path / "out"), "--clear-failures"])
    assert cleared.exit_code == 0 and state.failure_streak() == 0


def test_log_file_gets_reporter_lines_redacted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from heretic.lifecycle.logfile import LoggedReporter, attach_log_file, detach_log_file
    from heretic.progress import NullReporter

    secret = "hf_LogSecretLogSecret12345"
    monkeypatch.setenv("HF_TOKEN", secret)
    handler = attach_log_file(tmp_path)
    try:
        reporter = LoggedReporter(NullReporter(), every_s=3600)
        reporter.info(f"token is {secret}")
        reporter.warn("disk nearly full")
        with reporter.task("trials", 3) as advance:
            for _ in range(3):
                advance(1)
    finally:
        detach_log_file(handler)
    text = (tmp_path / "heretic.log").read_text()
    assert secret not in text and "token is ****" in text
    assert "WARNING heretic.run: disk nearly full" in text
    assert "trials: 3/3" in text and "trials: 1/3" not in text  # throttled, last line kept


def test_render_interrupted_run_has_no_eta_and_short_floats(tmp_path: Path) -> None:
    state = RunState(tmp_path)
    state.begin_attempt()
    state.set_trials(
        46, 300, 37.0, {"trial": 45, "refusals": 0, "kl_divergence": 3.6486030694504734e-06}
    )
    state.record_failure(ExitCode.INTERRUPTED, "Stopped on SIGTERM; the study is saved.")
    text = render(summary(state))
    assert "State: interrupted" in text
    assert "Trials: 46 of 300\n" in text  # no ETA for a run that is not running
    assert "kl_divergence=3.65e-06" in text
    assert "Interrupted at " in text and "Failure at" not in text


def test_status_says_stopped_at_once_after_a_sigkill(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    holder = (
        "import sys; from pathlib import Path; from heretic.preflight.lock import "
        "acquire_run_lock; from heretic.lifecycle.state import RunState; "
        "lock = acquire_run_lock(Path(sys.argv[1])); RunState(Path(sys.argv[1])).set_phase("
        "'search'); print('locked', flush=True); sys.stdin.readline()"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    assert summary(RunState(tmp_path))["state"] == "running"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = summary(RunState(tmp_path))  # progress.json is seconds old, yet the run is gone
    assert data["state"].startswith("stopped") and data["lock_held"] is False
