"""Every network call has a deadline: against a loopback server that accepts every connection
and never answers (tests/fakes/silent.py), the Hub upload, `heretic upload`, a webhook post
and a provider API call each end in bounded time with their own error and exit code."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.silent import SilentServer
from test_upload import REPO, TOKEN, digest, make_output

from heretic.cloud.http import ApiClient
from heretic.errors import CloudError, ExitCode, InterruptedRun, UploadDeadlineError, UploadError
from heretic.hub_client import Timeouts
from heretic.lifecycle.upload import upload_output
from heretic.webhook import WebhookError, post_json


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with SilentServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_upload_to_a_hub_that_never_answers_ends_within_its_deadline(
    silent_hub: SilentServer, tmp_path: Path
) -> None:
    out = make_output(tmp_path)
    before = digest(out)
    start = time.monotonic()
    with pytest.raises(UploadDeadlineError) as err:
        # A read timeout far beyond the deadline: the overall deadline is what ends it.
        upload_output(out, REPO, deadline_s=1.5, timeouts=Timeouts(connect_s=5, read_s=60))
    elapsed = time.monotonic() - start
    assert elapsed < 4, elapsed
    assert silent_hub.accepted >= 1  # it did connect, and got no answer
    assert err.value.exit_code == ExitCode.UPLOAD and err.value.ends_run
    assert "upload_deadline_s" in err.value.message and "local output is intact" in err.value.hint
    assert digest(out) == before


def test_each_read_of_the_hub_has_a_timeout(silent_hub: SilentServer, tmp_path: Path) -> None:
    # huggingface_hub's own client waits for ever; ours gives up on a silent read, and the
    # retry rule then treats it as a transient failure.
    start = time.monotonic()
    with pytest.raises(UploadError) as err:
        upload_output(
            make_output(tmp_path),
            REPO,
            retries=1,
            backoff_s=0.01,
            deadline_s=60,
            timeouts=Timeouts(connect_s=5, read_s=0.5),
        )
    assert time.monotonic() - start < 10
    assert not isinstance(err.value, UploadDeadlineError)
    assert "failed 2 times" in err.value.message and "Timeout" in err.value.message
    assert silent_hub.accepted >= 2


def test_a_stop_request_ends_the_upload_at_once(silent_hub: SilentServer, tmp_path: Path) -> None:
    asked = time.monotonic() + 0.5
    with pytest.raises(InterruptedRun) as err:
        upload_output(
            make_output(tmp_path), REPO, deadline_s=60, should_stop=lambda: time.monotonic() > asked
        )
    assert time.monotonic() - asked < 2
    assert err.value.exit_code == ExitCode.INTERRUPTED
    assert "local output is intact" in err.value.hint


def _cli(server: SilentServer, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")},
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(cwd / "hf-home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_ENDPOINT": server.url,
        "HF_TOKEN": TOKEN,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "heretic", "upload", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_cli_upload_to_a_silent_hub_exits_10_at_its_deadline(tmp_path: Path) -> None:
    out = make_output(tmp_path)
    with SilentServer() as server:
        proc = _cli(server, tmp_path, str(out), REPO, "--deadline", "3")
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == ExitCode.UPLOAD, stderr
    assert "did not finish within its deadline of 3 s" in stderr
    assert "Traceback" not in stderr and TOKEN not in stderr


def test_sigterm_during_heretic_upload_exits_75(tmp_path: Path) -> None:
    out = make_output(tmp_path)
    with SilentServer() as server:
        proc = _cli(server, tmp_path, str(out), REPO)
        try:
            assert proc.stderr is not None
            seen = ""
            while "Uploading" not in seen:  # the upload has begun
                line = proc.stderr.readline()
                assert line, "heretic upload ended before it began uploading"
                seen += line
            proc.send_signal(signal.SIGTERM)
            start = time.monotonic()
            _, rest = proc.communicate(timeout=30)
            elapsed = time.monotonic() - start
        finally:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, seen + rest
    assert elapsed < 10
    assert "SIGTERM received: stopping the upload now" in rest
    assert "stopped on request" in rest and "heretic upload OUTPUT REPO_ID" in rest


def test_a_webhook_that_never_answers_fails_within_its_timeout() -> None:
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(WebhookError, match="unreachable"):
            post_json(server.url + "/hook?key=secret", {"status": "done"}, timeout_s=0.5)
        assert time.monotonic() - start < 5
        assert server.accepted == 1


def test_a_provider_api_that_never_answers_fails_within_its_timeout() -> None:
    with SilentServer() as server:
        client = ApiClient(
            "vast", server.url, "key", timeout_s=0.5, retries=1, sleep=lambda s: None
        )
        start = time.monotonic()
        with pytest.raises(CloudError, match="Could not reach vast"):
            client.call("GET", "/instances/")
        client.close()
        assert time.monotonic() - start < 5
        assert server.accepted == 2  # the retry, then the end


def test_a_run_whose_upload_never_ends_exits_10_keeps_the_output_and_ends_the_rental(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The whole `heretic run --upload` on a rented Vast machine, the Hub silent: the upload is
    # abandoned at upload_deadline_s with exit 10, the export stays, --on-failure stop acts.
    import huggingface_hub.constants as hf_constants
    from test_lifecycle_failure import STOP, VastWithStop, provider_calls, vast_env

    from heretic.run.execution import execute

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    out = tmp_path / "out"
    cli = {
        "output": out,
        "trials": 2,
        "upload": REPO,
        "kl_cap": 100.0,
        "max_refusal_share": 1.0,
        "verify_alternatives": 0,
        "upload_deadline_s": 2.0,
    }
    with SilentServer() as hub, VastWithStop() as vast:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(UploadDeadlineError) as err:
            execute(cli, environ={**os.environ, **vast_env(vast)})
        assert hub.accepted >= 1
    assert err.value.exit_code == ExitCode.UPLOAD
    assert provider_calls(vast) == [STOP["vast"]]  # a restart would only wait as long again
    assert any((out / "model").glob("*.safetensors"))  # the local output is kept
    assert (out / "report.json").is_file() and not (out / "study" / "DONE.json").exists()
