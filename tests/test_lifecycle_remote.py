"""Notification webhook and self-shutdown against loopback fakes of the receivers' APIs."""

from __future__ import annotations

from fakes.recorder import Recorder

from heretic.lifecycle.notification import build_payload, send_notification
from heretic.lifecycle.shutdown import shutdown_self

KEY = "vastkey_0123456789abcdef"


def test_notification_payload_reaches_webhook() -> None:
    with Recorder() as hook:
        ok = send_notification(hook.url + "/hook", build_payload("done", "finished: x", k=1))
    assert ok
    body = hook.requests[0].json()
    assert hook.requests[0].method == "POST"
    assert body["text"] == body["content"] and "heretic done" in body["text"]
    assert body["status"] == "done" and body["k"] == 1


def test_notification_failures_never_raise() -> None:
    with Recorder(default=(500, {"error": "x"})) as hook:
        assert send_notification(hook.url, {"text": "t"}) is False
        dead = hook.url
    assert send_notification(dead, {"text": "t"}, timeout_s=2) is False  # nobody listens
    assert send_notification("not a url", {"text": "t"}) is False


def test_notification_text_is_redacted(monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_SecretSecret0123456789")
    payload = build_payload("failed", "bad token hf_SecretSecret0123456789")
    assert "hf_Secret" not in str(payload)


def test_vast_instance_destroys_itself() -> None:
    with Recorder() as vast:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "CONTAINER_ID": "4242",
            "CONTAINER_API_KEY": KEY,
            "HERETIC_VAST_API_URL": vast.url + "/api/v0",
        }
        result = shutdown_self(env, sleep=lambda s: None)
    assert result.ok and result.provider == "vast"
    seen = vast.requests[0]
    assert (seen.method, seen.path) == ("DELETE", "/api/v0/instances/4242/")
    assert seen.headers["Authorization"] == f"Bearer {KEY}"


def test_runpod_pod_terminates_itself_with_retry() -> None:
    slept: list[float] = []
    with Recorder(answers=[(503, {"title": "busy"})], default=(204, {})) as runpod:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "abc123",
            "RUNPOD_API_KEY": KEY,
            "HERETIC_RUNPOD_API_URL": runpod.url + "/v2",
        }
        result = shutdown_self(env, sleep=slept.append)
    assert result.ok and result.provider == "runpod"
    assert [(r.method, r.path) for r in runpod.requests] == [("DELETE", "/v2/pods/abc123")] * 2
    assert len(slept) == 1


def test_refused_shutdown_is_reported_without_the_key() -> None:
    with Recorder(default=(403, {"error": f"bad key {KEY}"})) as vast:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "CONTAINER_ID": "1",
            "CONTAINER_API_KEY": KEY,
            "HERETIC_VAST_API_URL": vast.url,
        }
        result = shutdown_self(env, sleep=lambda s: None)
    assert not result.ok and "403" in result.message
    assert KEY not in result.message
    assert len(vast.requests) == 1  # a 403 is not retried


def test_elsewhere_it_says_it_cannot() -> None:
    result = shutdown_self({})
    assert not result.ok and result.provider is None
    assert "keeps running" in result.message
    missing_key = shutdown_self({"HERETIC_LAUNCHED_BY": "heretic-test", "RUNPOD_POD_ID": "p"})
    assert not missing_key.ok and "RUNPOD_API_KEY" in missing_key.message


def _fake_runpodctl(folder, exit_code: int) -> str:
    """A stand-in for RunPod's runpodctl (a client of RunPod's API) that records its
    arguments; returns a PATH holding it."""
    folder.mkdir()
    script = folder / "runpodctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/calls"\nexit {exit_code}\n')
    script.chmod(0o755)
    return f"{folder}:/usr/bin:/bin"


def test_a_refused_runpod_self_termination_falls_back_to_runpodctl(tmp_path) -> None:
    """RunPod does not document that the pod-scoped key may DELETE its pod: on 401/403 the
    documented route (`runpodctl pod delete $RUNPOD_POD_ID`) is taken, once."""
    with Recorder(
        default=(403, {"title": "Forbidden", "status": 403, "detail": "access denied"})
    ) as runpod:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "abc123",
            "RUNPOD_API_KEY": KEY,
            "HERETIC_RUNPOD_API_URL": runpod.url + "/v2",
            "PATH": _fake_runpodctl(tmp_path / "bin", 0),
        }
        result = shutdown_self(env, sleep=lambda s: None)
    assert result.ok and "runpodctl" in result.message
    assert (tmp_path / "bin" / "calls").read_text() == "pod delete abc123\n"
    assert len(runpod.requests) == 1  # a 403 is not retried


def test_a_refused_runpod_self_termination_without_runpodctl_says_so(tmp_path) -> None:
    with Recorder(
        default=(401, {"title": "Unauthorized", "status": 401, "detail": "invalid key"})
    ) as runpod:
        env = {
            "HERETIC_LAUNCHED_BY": "heretic-test",
            "RUNPOD_POD_ID": "abc123",
            "RUNPOD_API_KEY": KEY,
            "HERETIC_RUNPOD_API_URL": runpod.url + "/v2",
            "PATH": str(tmp_path),
        }
        result = shutdown_self(env, sleep=lambda s: None)
    assert not result.ok and result.status == 401
    assert "401" in result.message and "runpodctl" in result.message and KEY not in result.message
    assert len(runpod.requests) == 1
