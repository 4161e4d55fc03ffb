"""`--on-failure keep|stop|destroy`: a run that fails for good on a provider stops (or
destroys, or keeps) its own instance, tested against the loopback fakes of both APIs.

The requests are checked against the providers' published APIs:
- RunPod REST v2, OpenAPI `api-reference-v2/openapi.json` in github.com/runpod/docs (info
  version 2.0.0, commit a900806e, 2026-08-20): stop is `POST /v2/pods/{id}/action` with
  `{"action": "stop"}` (200, the pod goes to EXITED; there is no `/pods/{id}/stop` in v2),
  terminate is `DELETE /v2/pods/{id}` (204).
- Vast.ai API v0, as vast-cli's `stop instance` and `destroy instance` send them
  (github.com/vast-ai/vast-cli, vast.py): stop is `PUT /api/v0/instances/{id}/` with
  `{"state": "stopped"}` (200 {"success": true}), destroy is `DELETE /api/v0/instances/{id}/`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.fake_runpod import RUNPOD_KEY, FakeRunPod
from fakes.fake_vast import VAST_KEY, FakeVast, Recorded, Reply

from heretic.errors import ConfigError, ExitCode, ModelNotFoundError, StudyError
from heretic.lifecycle.on_failure import apply_policy, is_terminal, policy_from_argv, raw_policy
from heretic.lifecycle.state import RunState
from heretic.run.execution import execute

POD, INSTANCE = "pod_abc123", "555"


class RunPodWithActions(FakeRunPod):
    """FakeRunPod plus the v2 action endpoint (stop) the in-pod process calls."""

    def route(self, r: Recorded) -> Reply:
        if (
            r.method == "POST"
            and r.path == f"/v2/pods/{POD}/action"
            and r.headers.get("authorization") == f"Bearer {self.key}"
        ):
            if (r.body or {}).get("action") != "stop":
                return Reply(400, {"title": "Bad Request", "status": 400, "detail": "action"})
            self.pod_status = "EXITED"
            return Reply(200, self._pod(POD))
        return super().route(r)


class VastWithStop(FakeVast):
    """FakeVast plus `PUT /instances/{id}/ {"state": "stopped"}` (vast-cli's stop)."""

    def route(self, r: Recorded) -> Reply:
        if (
            r.method == "PUT"
            and r.path == f"/api/v0/instances/{INSTANCE}/"
            and r.headers.get("authorization") == f"Bearer {self.key}"
        ):
            if (r.body or {}).get("state") != "stopped":
                return Reply(400, {"success": False, "msg": "State must be 'stopped'"})
            self.instance = {**self.instance, "actual_status": "stopped"}
            return Reply(200, {"success": True})
        return super().route(r)


def runpod_env(fake: FakeRunPod) -> dict[str, str]:
    return {
        "HERETIC_LAUNCHED_BY": "heretic-test",
        "RUNPOD_POD_ID": POD,
        "RUNPOD_API_KEY": RUNPOD_KEY,
        "HERETIC_RUNPOD_API_URL": fake.base,
    }


def vast_env(fake: FakeVast) -> dict[str, str]:
    return {
        "HERETIC_LAUNCHED_BY": "heretic-test",
        "CONTAINER_ID": INSTANCE,
        "CONTAINER_API_KEY": VAST_KEY,
        "HERETIC_VAST_API_URL": fake.url + "/api/v0",
    }


def provider_calls(fake) -> list[tuple[str, str, object]]:
    return [(r.method, r.path, r.body) for r in fake.requests]


STOP = {
    "runpod": ("POST", f"/v2/pods/{POD}/action", {"action": "stop"}),
    "vast": ("PUT", f"/api/v0/instances/{INSTANCE}/", {"state": "stopped"}),
}
DESTROY = {
    "runpod": ("DELETE", f"/v2/pods/{POD}", None),
    "vast": ("DELETE", f"/api/v0/instances/{INSTANCE}/", None),
}


def fake_for(provider: str):
    return RunPodWithActions() if provider == "runpod" else VastWithStop()


def env_for(provider: str, fake) -> dict[str, str]:
    return runpod_env(fake) if provider == "runpod" else vast_env(fake)


@pytest.mark.parametrize("provider", ["runpod", "vast"])
@pytest.mark.parametrize(
    ("policy", "expected"), [("stop", STOP), ("destroy", DESTROY), ("keep", None)]
)
def test_a_missing_model_ends_the_instance_as_asked(provider, policy, expected, tmp_path):
    with fake_for(provider) as fake:
        env = env_for(provider, fake)
        with pytest.raises(ModelNotFoundError):
            execute(
                {
                    "model": str(tmp_path / "no-such-model"),
                    "output": tmp_path / "out",
                    "on_failure": policy,
                },
                environ=env,
            )
    assert provider_calls(fake) == ([expected[provider]] if expected else [])


@pytest.mark.parametrize("provider", ["runpod", "vast"])
def test_the_restart_loop_guard_stops_the_instance_by_default(provider, tmp_path, heretic_cache):
    out = tmp_path / "out"
    state = RunState(out / "study")
    for _ in range(3):  # three starts that failed without completing a trial (not terminal)
        state.record_failure(int(ExitCode.OUT_OF_MEMORY), "CUDA out of memory")
    with fake_for(provider) as fake:
        with pytest.raises(StudyError, match="restart loop"):
            execute({"output": out, "trials": 2}, environ=env_for(provider, fake))
    assert provider_calls(fake) == [STOP[provider]]
    recorded = state.read()["progress"]["after_failure"]
    assert recorded["policy"] == "stop" and recorded["ok"] and recorded["provider"] == provider


def test_bad_settings_use_the_variable_when_the_settings_cannot_be_read(tmp_path):
    with VastWithStop() as fake:
        env = {**vast_env(fake), "HERETIC_KL_CAP": "not-a-number", "HERETIC_ON_FAILURE": "destroy"}
        with pytest.raises(ConfigError):
            execute({"output": tmp_path / "out"}, environ=env)
    assert provider_calls(fake) == [DESTROY["vast"]]


def test_a_bad_argument_under_a_provider_stops_it(tmp_path):
    with RunPodWithActions() as fake:
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("HERETIC_", "RUNPOD_", "CONTAINER_"))
            },
            **runpod_env(fake),
        }
        result = subprocess.run(
            [sys.executable, "-m", "heretic", "run", "--no-such-option"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert result.returncode == 2
    assert "No such option" in result.stderr and "--on-failure stop" in result.stderr
    assert provider_calls(fake) == [STOP["runpod"]]


def test_refused_stop_is_reported_and_never_raises():
    with RunPodWithActions() as fake:
        fake.fail_queue.append(
            Reply(409, {"title": "Conflict", "status": 409, "detail": "pod is not running"})
        )
        result = apply_policy(
            "stop", int(ExitCode.PREFLIGHT), runpod_env(fake), sleep=lambda s: None
        )
    assert result is not None and not result.ok
    assert "409" in result.message and RUNPOD_KEY not in result.message
    assert "not valid for the pod's current status" in result.message


def test_what_counts_as_terminal_and_where_it_acts():
    assert is_terminal(ExitCode.MODEL_NOT_FOUND) and is_terminal(ExitCode.NO_ACCEPTABLE_TRIAL)
    assert is_terminal(ExitCode.STUDY) and is_terminal(ExitCode.USAGE)
    for code in (
        ExitCode.INTERRUPTED,
        ExitCode.OUT_OF_MEMORY,
        ExitCode.UPLOAD,
        ExitCode.INTERNAL,
        ExitCode.LOCKED,
    ):
        assert not is_terminal(code)  # a restart may cure these; the loop guard bounds them
    # Not on a provider, or not terminal: nothing is sent (no server needed to prove it).
    assert apply_policy("destroy", int(ExitCode.CONFIG), {}) is None
    assert (
        apply_policy(
            "destroy",
            int(ExitCode.INTERRUPTED),
            {"HERETIC_LAUNCHED_BY": "heretic-test", "RUNPOD_POD_ID": "p", "RUNPOD_API_KEY": "k"},
        )
        is None
    )
    assert raw_policy(None, {}) == "stop" and raw_policy("bogus", {}) == "stop"
    assert raw_policy(None, {"HERETIC_ON_FAILURE": "KEEP"}) == "keep"
    assert policy_from_argv(["--trials", "x", "--on-failure", "destroy"], {}) == "destroy"
    assert policy_from_argv(["--on-failure=keep"], {"HERETIC_ON_FAILURE": "destroy"}) == "keep"


def test_status_shows_what_was_done(tmp_path: Path) -> None:
    from heretic.lifecycle.status import render, summary

    state = RunState(tmp_path)
    state.record_failure(5, "Model x does not exist.")
    state.record_after_failure(
        {
            "policy": "stop",
            "provider": "vast",
            "ok": True,
            "message": "Asked vast to stop instance 555.",
        }
    )
    text = render(summary(state))
    assert "On failure (stop): Asked vast to stop instance 555." in text
    assert json.loads(state.progress_path.read_text())["after_failure"]["ok"] is True
