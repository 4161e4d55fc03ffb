"""RunLifecycle: the order upload -> DONE.json -> notify -> shutdown, restarts, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes.fake_hub import FakeHub
from fakes.recorder import Recorded, Recorder
from test_upload import TOKEN, make_output

from heretic.config.settings import Settings
from heretic.errors import ExitCode, StudyError, TokenError
from heretic.lifecycle.session import RunLifecycle
from heretic.lifecycle.state import RunState

REPO = "someone/tiny-heretic"


@pytest.fixture
def offline_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def test_finish_uploads_marks_done_notifies_then_shuts_down(
    offline_off: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = make_output(tmp_path)
    done_file = out / "study" / "DONE.json"
    at_shutdown: list[bool] = []

    def look(seen: Recorded) -> None:
        at_shutdown.append(done_file.is_file())

    with FakeHub(TOKEN) as hub, Recorder() as hook, Recorder(on_request=look) as vast:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "CONTAINER_ID": "7",
            "CONTAINER_API_KEY": "k" * 20,
            "HERETIC_VAST_API_URL": vast.url,
        }
        settings = Settings(output=out, upload=REPO, notify=hook.url, shutdown_after=True)
        with RunLifecycle(settings, environ=env) as life:
            assert not life.already_done
            life.state.set_trials(3, 3, 0, {"refusals": 1})
            info = life.finish({"selected_trial": 2})
        assert [r.method for r in vast.requests] == ["DELETE"]
        assert at_shutdown == [True]  # the record was on disk before the machine was ended
        assert hook.requests[0].json()["status"] == "done"
        assert REPO in hub.repos
    done = json.loads(done_file.read_text())
    assert done["upload_url"] == f"{hub.url}/{REPO}" and done["selected_trial"] == 2
    assert done["shutdown"]["ok"] is True and info["shutdown"]["provider"] == "vast"
    assert "Ending instance 7" in (out / "study" / "heretic.log").read_text()

    # A restart on the same folder does nothing (and calls nobody).
    with Recorder() as hook2:
        again = Settings(output=out, upload=REPO, notify=hook2.url)
        with RunLifecycle(again, environ={}) as life:
            assert life.already_done
        assert hook2.requests == []


def test_shutdown_after_without_upload_leaves_machine(tmp_path: Path) -> None:
    with Recorder() as vast:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "CONTAINER_ID": "7",
            "CONTAINER_API_KEY": "k" * 20,
            "HERETIC_VAST_API_URL": vast.url,
        }
        settings = Settings(output=tmp_path / "out", shutdown_after=True)
        with RunLifecycle(settings, environ=env) as life:
            life.finish()
        assert vast.requests == []
    assert RunState(tmp_path / "out" / "study").is_done()


def test_restart_retries_a_failed_shutdown(tmp_path: Path) -> None:
    state = RunState(tmp_path / "out" / "study")
    state.mark_done({"upload_url": "https://hf.co/x", "shutdown": {"ok": False}})
    with Recorder(default=(204, {})) as runpod:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "p1",
            "RUNPOD_API_KEY": "r" * 20,
            "HERETIC_RUNPOD_API_URL": runpod.url,
        }
        settings = Settings(output=tmp_path / "out", shutdown_after=True)
        with RunLifecycle(settings, environ=env) as life:
            assert life.already_done
        assert [r.path for r in runpod.requests] == ["/pods/p1"]
    assert state.done_info()["shutdown"]["ok"] is True


def test_a_refused_self_termination_ends_in_the_on_failure_stop(tmp_path: Path) -> None:
    """RunPod refuses the DELETE (403, no runpodctl): the pod is stopped instead (REST v2
    POST /pods/{id}/action {"action": "stop"}), so the GPU stops billing; said in DONE.json."""
    state = RunState(tmp_path / "out" / "study")
    state.mark_done({"upload_url": "https://hf.co/x", "shutdown": {"ok": False}})
    refused = (403, {"title": "Forbidden", "status": 403, "detail": "access denied"})
    with Recorder(answers=[refused], default=(200, {"id": "p1", "desiredStatus": "EXITED"})) as rp:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "p1",
            "RUNPOD_API_KEY": "r" * 20,
            "PATH": str(tmp_path),
            "HERETIC_RUNPOD_API_URL": rp.url,
        }
        settings = Settings(output=tmp_path / "out", shutdown_after=True)
        with RunLifecycle(settings, environ=env) as life:
            assert life.already_done
        assert [(r.method, r.path) for r in rp.requests] == [
            ("DELETE", "/pods/p1"),
            ("POST", "/pods/p1/action"),
        ]
        assert rp.requests[1].json() == {"action": "stop"}
    shutdown = state.done_info()["shutdown"]
    assert shutdown["ok"] is True and "--on-failure stop" in shutdown["message"]


def test_a_refused_self_termination_with_on_failure_keep_only_says_so(tmp_path: Path) -> None:
    state = RunState(tmp_path / "out" / "study")
    state.mark_done({"upload_url": "https://hf.co/x", "shutdown": {"ok": False}})
    with Recorder(default=(403, {"title": "Forbidden", "status": 403})) as rp:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "p1",
            "RUNPOD_API_KEY": "r" * 20,
            "PATH": str(tmp_path),
            "HERETIC_RUNPOD_API_URL": rp.url,
        }
        settings = Settings(output=tmp_path / "out", shutdown_after=True, on_failure="keep")
        with RunLifecycle(settings, environ=env, shutdown_tries=1) as life:
            assert life.already_done
        assert [r.method for r in rp.requests] == ["DELETE"]
    assert state.done_info()["shutdown"]["ok"] is False


def test_missing_token_fails_at_start_not_at_the_end(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    settings = Settings(output=tmp_path / "out", upload=REPO)
    with pytest.raises(TokenError), RunLifecycle(settings):
        pytest.fail("the body must not run")
    progress = RunState(tmp_path / "out" / "study").read()["progress"]
    assert progress["exit_code"] == ExitCode.TOKEN


def test_failures_are_recorded_notified_and_a_loop_is_stopped(tmp_path: Path) -> None:
    settings_kw = {"output": tmp_path / "out"}
    with Recorder() as hook:
        settings = Settings(notify=hook.url, **settings_kw)
        for _ in range(3):
            with pytest.raises(RuntimeError), RunLifecycle(settings):
                raise RuntimeError("crash in trial")
        with pytest.raises(StudyError, match="not trying again"), RunLifecycle(settings):
            pytest.fail("the restart guard must stop this start")
        statuses = [r.json()["status"] for r in hook.requests]
    assert statuses == ["failed"] * 3  # the guard's own refusals are not notified again
    progress = RunState(tmp_path / "out" / "study").read()["progress"]
    assert progress["failures"][0]["exit_code"] == ExitCode.INTERNAL
    assert progress["failure_streak"] == 4


SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import typer
    from heretic.cli.errors import map_errors
    from heretic.config.settings import Settings
    from heretic.lifecycle.session import RunLifecycle

    out, total = Path(sys.argv[1]), int(sys.argv[2])
    def run():
        with RunLifecycle(Settings(output=out)) as life:
            if life.already_done:
                print("already done")
                return
            start = 0 if not (out / "n").exists() else int((out / "n").read_text())
            for k in range(start, total):
                time.sleep(0.02)  # one "trial"
                (out / "n").write_text(str(k + 1))
                life.state.set_trials(k + 1, total, None, None)
                life.stop.check()
            life.finish()
    try:
        with map_errors():
            run()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
""")


def test_sigterm_stops_after_the_trial_and_the_next_start_resumes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out), "100000"], stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "n").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.terminate()  # SIGTERM, as docker stop sends it
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "Stopped on SIGTERM" in stderr
    state = RunState(out / "study")
    progress = state.read()["progress"]
    assert progress["phase"] == "interrupted" and not state.is_done()
    assert progress["trials"]["completed"] == int((out / "n").read_text())  # trial finished
    assert "SIGTERM received" in state.log_path.read_text()

    stopped_at = int((out / "n").read_text())
    again = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(stopped_at + 3)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0, again.stderr
    assert int((out / "n").read_text()) == stopped_at + 3  # resumed, did not start over
    assert state.is_done() and "Start 2" in state.log_path.read_text()
    third = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), "1"], capture_output=True, text=True, timeout=60
    )
    assert third.returncode == 0 and third.stdout.strip() == "already done"


def test_returned_failure_and_hook_callbacks(tmp_path: Path) -> None:
    with Recorder() as hook:
        settings = Settings(output=tmp_path / "out", notify=hook.url)
        with RunLifecycle(settings) as life:
            life.on_phase("search")
            life.on_trial(4, 10, 60.0, {"refusals": 5})
            assert life.should_stop() is False
            life.fail(ExitCode.NO_ACCEPTABLE_TRIAL, "no trial under kl_cap")
        assert hook.requests[0].json()["exit_code"] == ExitCode.NO_ACCEPTABLE_TRIAL
    progress = RunState(tmp_path / "out" / "study").read()["progress"]
    assert progress["trials"]["completed"] == 4 and progress["phase"] == "failed"
    assert progress["exit_code"] == ExitCode.NO_ACCEPTABLE_TRIAL


@pytest.mark.parametrize(("policy", "expected_trial"), [("fewest-refusals", 1), ("lowest-kl", 2)])
def test_best_so_far_follows_the_selection_policy(policy: str, expected_trial: int) -> None:
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from heretic.run.recipe import best_so_far

    def trial(number: int, refusals: int, kl: float):
        t = create_trial(
            values=[refusals, kl],
            params={"x": 0.0},
            distributions={"x": FloatDistribution(0, 1)},
            state=TrialState.COMPLETE,
        )
        t.number = number
        return t

    trials = [
        trial(0, 40, 0.01),
        trial(1, 1, 0.30),
        trial(2, 4, 0.02),
        trial(3, 0, 2.0),  # over kl_cap: never the best
        trial(4, 50, 0.001),
    ]  # latest, and worst
    settings = Settings(selection=policy, kl_cap=0.5, refusal_cap=5)
    best = best_so_far(trials, settings)
    assert best is not None and best["trial"] == expected_trial and best["meets_policy"]
    nothing = best_so_far([trial(0, 9, 0.9)], Settings(kl_cap=0.5))
    assert nothing is not None and nothing["meets_policy"] is False


def test_done_marker_records_absolute_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    with RunLifecycle(Settings(output=Path("out"))) as life:
        life.finish({"model_dir": "out/model"})
    done = RunState(tmp_path / "out" / "study").done_info() or {}
    assert done["output_dir"] == str(tmp_path / "out")
    assert done["model_dir"] == str(tmp_path / "out" / "model")


class _Held(Exception):
    """Raised by the fake clock to end a process that would otherwise wait for ever."""


def test_a_refused_self_termination_makes_no_restart_loop_and_notifies_once(
    tmp_path: Path,
) -> None:
    """RunPod refuses both the DELETE and the stop (403; no runpodctl): the finished run does
    not exit into RunPod's restart loop. It keeps trying in the process with a doubling wait
    and notifies once; a restart (the provider's, or a person's) does not notify again."""
    state = RunState(tmp_path / "out" / "study")
    state.mark_done({"upload_url": "https://hf.co/x", "shutdown": {"ok": False}})
    refused = (403, {"title": "Forbidden", "status": 403, "detail": "access denied"})
    waits: list[float] = []

    def clock(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 4:
            raise _Held

    with Recorder(default=refused) as runpod, Recorder() as hook:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "p1",
            "RUNPOD_API_KEY": "r" * 20,
            "HERETIC_RUNPOD_API_URL": runpod.url,
            "PATH": str(tmp_path),
        }
        settings = Settings(
            output=tmp_path / "out", shutdown_after=True, notify=hook.url, retry_backoff_s=60
        )
        # Unbounded: the process holds (never returns, so never exits) while it is refused.
        with pytest.raises(_Held), RunLifecycle(settings, environ=env, sleep=clock):
            pass
        assert waits == [60, 120, 240, 480]
        assert [r.method for r in runpod.requests] == ["DELETE", "POST"] * 4
        # A later start (bounded here) tries again but says nothing new.
        with RunLifecycle(settings, environ=env, shutdown_tries=1) as life:
            assert life.already_done
        sent = [r.json() for r in hook.requests]
    # ("failed" is the fake clock's own exception ending the held process.)
    assert [p["status"] for p in sent if p["status"] != "failed"] == ["shutdown-failed"]
    assert "keeps billing" in sent[0]["text"]
    assert state.done_info()["shutdown"] == {
        **state.done_info()["shutdown"],
        "ok": False,
        "notified": True,
    }
