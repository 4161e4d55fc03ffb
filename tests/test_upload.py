"""Upload to the Hub against a loopback fake of the Hub API (tests/fakes/fake_hub.py)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fakes.fake_hub import FakeHub

from heretic.errors import ConfigError, ExitCode, TokenError, UploadError
from heretic.lifecycle.state import RunState
from heretic.lifecycle.upload import upload_output

TOKEN = "hf_FakeTokenForTests0123456789abcdefgh"
REPO = "someone/tiny-heretic"


class Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append("WARN " + message)

    def task(self, name: str, total: int):  # pragma: no cover - not used by upload
        raise NotImplementedError


def make_output(root: Path) -> Path:
    out = root / "out"
    model = out / "model"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(os.urandom(4096))
    (model / "config.json").write_text('{"model_type": "llama"}')
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    (model / "chat_template.jinja").write_text("{{ messages }}")
    (model / "README.md").write_text("---\nbase_model: tiny\ntags: [heretic]\n---\n# card\n")
    (out / "report.json").write_text('{"refusals": 3, "kl": 0.12}')
    (out / "trials.jsonl").write_text('{"number": 0}\n')
    (out / "pareto.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return out


def digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub.constants as hf_constants

    # The suite runs with HF_HUB_OFFLINE=1; these tests talk to 127.0.0.1 only.
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub(TOKEN) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_uploads_layout_privately_and_verifies(hub: FakeHub, tmp_path: Path) -> None:
    out = make_output(tmp_path)
    url = upload_output(out, REPO, backoff_s=0.01)
    assert url == f"{hub.url}/{REPO}"
    repo = hub.repos[REPO]
    assert repo.private is True
    assert set(repo.files) == {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "chat_template.jinja",
        "README.md",
        "heretic/report.json",
        "heretic/trials.jsonl",
        "heretic/pareto.png",
    }
    assert repo.files["model.safetensors"] == (out / "model" / "model.safetensors").read_bytes()
    assert "tree" in hub.routes()  # verified by listing the repo after the commit
    assert all(
        seen.authorization == f"Bearer {TOKEN}" for seen in hub.requests if seen.route != "unknown"
    )


def test_public_flag_creates_public_repo(hub: FakeHub, tmp_path: Path) -> None:
    upload_output(make_output(tmp_path), REPO, private=False, backoff_s=0.01)
    assert hub.repos[REPO].private is False


def test_transient_503_is_retried(hub: FakeHub, tmp_path: Path) -> None:
    hub.fail("create", 503)
    lines = Lines()
    slept: list[float] = []
    upload_output(make_output(tmp_path), REPO, reporter=lines, backoff_s=2.0, sleep=slept.append)
    assert hub.routes().count("create") == 2
    assert slept == [2.0]
    assert any(
        line.startswith("WARN Upload attempt 1 failed") and "503" in line for line in lines.lines
    )
    assert "heretic/report.json" in hub.repos[REPO].files


def test_retries_spent_raise_upload_error(hub: FakeHub, tmp_path: Path) -> None:
    hub.fail("create", 503, 503, 503)
    slept: list[float] = []
    with pytest.raises(UploadError) as err:
        upload_output(make_output(tmp_path), REPO, retries=2, backoff_s=1.0, sleep=slept.append)
    assert "failed 3 times" in err.value.message
    assert slept == [1.0, 2.0]  # exponential back-off
    assert err.value.exit_code == ExitCode.UPLOAD


def test_permanent_failure_fails_fast_and_keeps_output(hub: FakeHub, tmp_path: Path) -> None:
    out = make_output(tmp_path)
    before = digest(out)
    hub.fail_always("commit", 403)
    with pytest.raises(UploadError) as err:
        upload_output(out, REPO, backoff_s=0.01)
    assert hub.routes().count("commit") == 1  # a 403 is not retried
    assert "403" in err.value.message and "WRITE access" in err.value.hint
    assert digest(out) == before


def test_refused_token_is_not_echoed(
    monkeypatch: pytest.MonkeyPatch, hub: FakeHub, tmp_path: Path
) -> None:
    wrong = "hf_WrongTokenWrongToken0123456789xyz"
    with pytest.raises(UploadError) as err:
        upload_output(make_output(tmp_path), REPO, token=wrong, backoff_s=0.01)
    assert "401" in err.value.message
    assert wrong not in err.value.paragraph()


@pytest.mark.parametrize("value", [None, "", "hf_ with space", "short"])
def test_missing_or_malformed_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    else:
        monkeypatch.setenv("HF_TOKEN", value)
    with pytest.raises(TokenError):
        upload_output(make_output(tmp_path), REPO)


@pytest.mark.parametrize("repo_id", ["no-namespace", "a/b/c", "me/bad name", "me/..x"])
def test_bad_repo_id(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, repo_id: str) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ConfigError):
        upload_output(make_output(tmp_path), repo_id)


def test_not_an_output_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(UploadError, match="no exported model"):
        upload_output(tmp_path, REPO)


def test_file_holding_the_token_is_refused(hub: FakeHub, tmp_path: Path) -> None:
    out = make_output(tmp_path)
    (out / "report.json").write_text(json.dumps({"oops": TOKEN}))
    with pytest.raises(UploadError, match="contains your Hugging Face token"):
        upload_output(out, REPO)
    assert hub.requests == []  # nothing left the machine


# --- the real CLI, in a subprocess ---------------------------------------------------------
def run_cli(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(cwd / "hf-home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **env_extra,
    }
    return subprocess.run(
        [sys.executable, "-m", "heretic", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_token_nowhere(root: Path, *texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
    for path in root.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"token written to {path}"


def test_cli_upload_success_updates_done_marker(tmp_path: Path) -> None:
    out = make_output(tmp_path)
    (out / "study").mkdir()
    with FakeHub(TOKEN) as hub:
        proc = run_cli(
            ["upload", str(out), REPO], {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}, tmp_path
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{hub.url}/{REPO}"
    assert RunState(out / "study").done_info()["upload_url"] == f"{hub.url}/{REPO}"
    assert_token_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_cli_upload_permanent_failure_exits_with_upload_code(tmp_path: Path) -> None:
    out = make_output(tmp_path)
    before = digest(out)
    with FakeHub(TOKEN) as hub:
        hub.fail_always("preupload", 403)
        proc = run_cli(
            ["upload", str(out), REPO], {"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}, tmp_path
        )
    assert proc.returncode == ExitCode.UPLOAD, proc.stderr
    assert "\nerror: The Hub refused the upload (HTTP 403)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert digest(out) == before
    assert_token_nowhere(tmp_path, proc.stdout, proc.stderr)


def test_cli_upload_without_token_exits_with_token_code(tmp_path: Path) -> None:
    out = make_output(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    proc = subprocess.run(
        [sys.executable, "-m", "heretic", "upload", str(out), REPO],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == ExitCode.TOKEN
    assert "HF_TOKEN is not set" in proc.stderr


def test_run_upload_permanent_failure_exits_10_keeps_output_and_next_start_uploads(
    demo_model_dir: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # The whole `heretic run`: a refused upload is exit 10 with the export kept and no done
    # marker; the next start finds the finished study, runs no new trial and uploads.
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "heretic",
        "run",
        "--trials",
        "4",
        "--output",
        str(out),
        "--set",
        "kl_cap=100",
        "--upload",
        REPO,
    ]
    with FakeHub(TOKEN) as hub:
        env = {**cli_env, "HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0"}
        hub.fail_always("commit", 403)
        first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == ExitCode.UPLOAD, first.stderr[-2000:]
        assert "HTTP 403" in first.stderr and "Traceback" not in first.stderr
        # a refusal no retry can change is not retried in the container (no minutes billed)
        assert "retry 1 of" not in first.stderr
        assert any((out / "model").glob("*.safetensors"))  # the local output is kept
        assert not (out / "study" / "DONE.json").exists()
        assert RunState(out / "study").read()["progress"]["exit_code"] == ExitCode.UPLOAD
        exported = digest(out / "model")
        hub.clear("commit")  # the Hub accepts commits again
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-2000:]
        assert "no new trials" in second.stderr
        assert REPO in hub.repos
    assert RunState(out / "study").done_info()["upload_url"] == f"{hub.url}/{REPO}"
    assert digest(out / "model") == exported
    assert_token_nowhere(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr)
