"""heretic never touches what it did not write: the output folder is refused unless heretic made
it (marker), has its own lock, and an export never deletes a file that is not its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heretic.engine.export import MARKER as EXPORT_MARKER
from heretic.engine.export import check_replaceable
from heretic.errors import ConfigError, LockedError
from heretic.run.output_folder import MARKER, OUTPUT_LOCK, check_output, claim_output

HERETIC = [sys.executable, "-m", "heretic"]


def run_cli(args: list[str], env: dict[str, str], cwd: Path | None = None):
    return subprocess.run(
        HERETIC + args, env=env, capture_output=True, text=True, timeout=120, cwd=cwd
    )


def _users_folder(root: Path) -> Path:
    folder = root / "d"
    (folder / "model").mkdir(parents=True)
    (folder / "README.md").write_text("my notes\n")
    (folder / "model" / "precious.bin").write_bytes(b"\x01" * 64)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_folder_of_the_users_files_is_refused_and_untouched(cli_env, tmp_path) -> None:
    folder = _users_folder(tmp_path)
    before = _snapshot(folder)
    result = run_cli(["run", "--trials", "2", "--output", str(folder)], cli_env)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "heretic did not write" in result.stderr or "no heretic marker" in result.stderr
    assert _snapshot(folder) == before
    assert sorted(os.listdir(folder)) == ["README.md", "model"]  # no study/, no marker, no lock


@pytest.mark.parametrize("where", ["", "/", "~"])
def test_empty_root_and_home_outputs_are_refused(cli_env, tmp_path, where) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = dict(cli_env, HOME=str(home))
    before = sorted(os.listdir("/"))
    result = run_cli(["run", "--trials", "2", "--output", where], env, cwd=home)
    assert result.returncode == 3, result.stderr[-2000:]
    assert sorted(os.listdir("/")) == before
    assert os.listdir(home) == []


def test_refused_in_process_without_writing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    for where in (Path("/"), tmp_path, Path(str(tmp_path) + "/.")):
        with pytest.raises(ConfigError):
            check_output(where)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        check_output(tmp_path / "file")


def test_a_new_folder_is_marked_locked_and_tidied(tmp_path) -> None:
    out = tmp_path / "out"
    with claim_output(out):
        assert json.loads((out / MARKER).read_text())["heretic_version"]
        with pytest.raises(LockedError, match=str(os.getpid())):
            claim_output(out)  # one run per output folder
    (out / ".pareto.png.k2j4_x9a.tmp").write_bytes(b"half a png")  # a SIGKILL mid-plot
    (out / "notes.txt").write_text("the user's, added later")
    (out / ".notes.txt.abc123.tmp").write_text("not one of heretic's names")
    with claim_output(out):
        pass
    assert not (out / ".pareto.png.k2j4_x9a.tmp").exists()
    assert (out / "notes.txt").read_text() == "the user's, added later"
    assert (out / ".notes.txt.abc123.tmp").exists()


def test_an_output_of_an_older_heretic_is_adopted(tmp_path) -> None:
    out = tmp_path / "out"
    (out / "study").mkdir(parents=True)
    (out / "model").mkdir()
    for name in ("report.json", "README.md", "trials.jsonl", "pareto.png"):
        (out / name).write_text("{}")
    with claim_output(out):
        assert (out / MARKER).is_file()


def test_an_empty_existing_folder_is_taken(tmp_path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    with claim_output(out):
        assert sorted(os.listdir(out)) == sorted([MARKER, OUTPUT_LOCK])


def test_a_second_run_with_the_same_output_and_another_study_fails(cli_env, tmp_path) -> None:
    out = tmp_path / "out"
    with claim_output(out):
        result = run_cli(
            ["run", "--trials", "2", "--output", str(out), "--study-dir", str(tmp_path / "s2")],
            cli_env,
        )
    assert result.returncode == 8, result.stderr[-2000:]
    assert str(os.getpid()) in result.stderr and "output folder" in result.stderr
    assert not (tmp_path / "s2" / "journal.log").exists()


def test_an_export_never_deletes_a_file_it_did_not_write(tmp_path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"w")
    check_replaceable(tmp_path / "absent")
    with pytest.raises(ConfigError, match="config.json"):
        check_replaceable(model)  # no export marker: not heretic's
    (model / EXPORT_MARKER).write_text(json.dumps({"parameters": {}}))
    check_replaceable(model)  # an older export: save_pretrained's names
    (model / "precious.bin").write_bytes(b"\x01")
    with pytest.raises(ConfigError, match="precious.bin"):
        check_replaceable(model)
    files = ["config.json", "model.safetensors", "precious.bin"]
    (model / EXPORT_MARKER).write_text(json.dumps({"parameters": {}, "files": files[:2]}))
    with pytest.raises(ConfigError, match="precious.bin"):
        check_replaceable(model)
    (model / "precious.bin").unlink()
    check_replaceable(model)


def test_a_claim_that_fails_at_once_leaves_no_folder_behind(tmp_path) -> None:
    from heretic.run.output_folder import output_claimed

    dest = tmp_path / "trial-9999"
    with pytest.raises(RuntimeError), output_claimed(dest):
        raise RuntimeError("no such trial")
    assert not dest.exists()
    kept = tmp_path / "kept"
    with pytest.raises(RuntimeError), output_claimed(kept):
        (kept / "report.json").write_text("{}")
        raise RuntimeError("after writing")
    assert (kept / "report.json").is_file()
