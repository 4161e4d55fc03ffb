"""Everything checkable is checked before the first weight loads, each bad input with its own
exit code and one paragraph: repo ids by the Hub's rules, one token rule, writable folders,
finite numbers, decodable prompt files, a readable config.json, a usable storage URL."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from heretic.config.hub_names import check_repo_id
from heretic.config.sources import env_layer, merge_layers, set_layer, toml_layer
from heretic.engine.prompts import load_prompts
from heretic.errors import (
    ConfigError,
    ExitCode,
    HereticError,
    ModelNotFoundError,
    PreflightError,
    PromptSourceError,
    StorageError,
    TokenError,
)
from heretic.lifecycle.upload import upload_output
from heretic.run.execution import execute

GOOD_TOKEN = "hf_" + "A1b2C3d4E5" * 4
SHORT_TOKEN = "hf_" + "abcdef0123456789abcd"  # the documented shape, too short


def _no_weights_touched(study: Path) -> None:
    """Nothing of a search exists: no journal, no directions."""
    assert not (study / "journal.log").exists()
    assert not (study / "directions.safetensors").exists()


def _one_paragraph(exc: HereticError) -> None:
    text = exc.paragraph()
    assert text and "\n" not in text and "Traceback" not in text


# --- repository ids -----------------------------------------------------------------------
@pytest.mark.parametrize("repo_id", ["me/x.git", "mé/x", "me/X.GIT", "me/x--y", "just-a-name"])
def test_repo_ids_the_hub_refuses_fail_before_the_run_starts(tmp_path: Path, repo_id: str) -> None:
    with pytest.raises(ConfigError) as err:
        execute({"output": tmp_path / "out", "upload": repo_id}, environ={"HF_TOKEN": GOOD_TOKEN})
    assert err.value.exit_code == ExitCode.CONFIG and repo_id in err.value.paragraph()
    _one_paragraph(err.value)
    assert not (tmp_path / "out").exists()  # refused before the study folder was made
    with pytest.raises(ConfigError):
        check_repo_id(repo_id)  # the same rule for `heretic upload`


def test_upload_refuses_the_same_repo_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"x")
    for repo_id in ("me/x.git", "mé/x"):
        with pytest.raises(ConfigError):
            upload_output(tmp_path, repo_id)


# --- one token rule -----------------------------------------------------------------------
def test_a_token_of_the_right_shape_but_too_short_is_exit_11_for_run_and_upload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", SHORT_TOKEN)
    with pytest.raises(TokenError) as err:
        execute({"output": tmp_path / "out", "upload": "me/model"}, environ=dict(os.environ))
    assert err.value.exit_code == ExitCode.TOKEN  # not 7 from the preflight table
    assert SHORT_TOKEN not in err.value.paragraph()
    _one_paragraph(err.value)
    _no_weights_touched(tmp_path / "out" / "study")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(TokenError):
        upload_output(tmp_path, "me/model")  # `heretic upload` refuses what `run` refuses


# --- folders ------------------------------------------------------------------------------
@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A folder nobody can write, root included: a read-only tmpfs."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        folder.chmod(0o555)
        probe = folder / "probe"
        try:
            probe.touch()
        except OSError:
            yield folder
            folder.chmod(0o755)
            return
        pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_a_read_only_output_with_a_writable_study_fails_before_the_search(
    read_only_dir: Path, tmp_path: Path
) -> None:
    study = tmp_path / "study"
    with pytest.raises(PreflightError) as err:
        execute({"output": read_only_dir / "out", "study_dir": study, "trials": 2}, environ={})
    assert err.value.exit_code == ExitCode.PREFLIGHT  # not 1 after the search
    assert "output folder" in err.value.message and "--output" in err.value.hint
    _one_paragraph(err.value)
    _no_weights_touched(study)


def test_an_unwritable_output_is_not_reported_as_locked(read_only_dir: Path) -> None:
    with pytest.raises(HereticError) as err:
        execute({"output": read_only_dir, "trials": 2}, environ={})
    assert err.value.exit_code == ExitCode.PREFLIGHT  # not 8 (LOCKED): nobody holds it
    assert "cannot be written" in err.value.message


# --- finite numbers -----------------------------------------------------------------------
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity"])
def test_infinite_or_nan_settings_are_refused(value: str, tmp_path: Path) -> None:
    for layer in (
        set_layer([f"kl_target={value}"]),
        env_layer({"HERETIC_KL_CAP": value}),
        {"max_weight": {"low": 0.5, "high": float(value)}},
    ):
        with pytest.raises(ConfigError) as err:
            merge_layers(layer)
        assert "finite" in err.value.message
    config = tmp_path / "c.toml"
    config.write_text(f"kl_target = {value.lower().replace('infinity', 'inf')}\n")
    with pytest.raises(ConfigError):
        merge_layers(toml_layer(config))


def test_set_kl_target_inf_fails_before_anything_is_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        execute({"output": out}, assignments=["kl_target=inf"], environ={})
    assert not out.exists()  # no settings.json or report.json with `Infinity` in it


def test_settings_as_written_to_disk_are_strict_json() -> None:
    dumped = json.dumps(merge_layers({"kl_target": 1e308}).public_dump(), allow_nan=False)
    assert "Infinity" not in dumped and "NaN" not in dumped


# --- prompt files -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("latin1.txt", "caf\xe9 au lait\nhow to\n".encode("latin-1"), "not UTF-8"),
        ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        ("corrupt.parquet", b"PAR1 this is not a parquet file at all", "not a readable parquet"),
        ("random.parquet", bytes(range(256)) * 8, "not a readable parquet"),
    ],
)
def test_undecodable_prompt_files_are_exit_4(
    tmp_path: Path, name: str, content: bytes, needle: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PromptSourceError) as err:
        load_prompts(str(path))
    assert err.value.exit_code == ExitCode.PROMPTS and needle in err.value.message
    _one_paragraph(err.value)
    with pytest.raises(PromptSourceError):  # the same in a run, before the model loads
        execute(
            {"output": tmp_path / "out", "harmful_prompts": str(path), "skip_preflight": True},
            environ={},
        )
    _no_weights_touched(tmp_path / "out" / "study")


def test_a_utf8_prompt_file_with_a_bom_reads(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufefffirst\nsecond\n".encode())
    assert load_prompts(str(path)) == ["first", "second"]


# --- model config, storage ----------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"model_type": "llama", ', "[1, 2]", "\xff\xfe"])
def test_a_damaged_config_json_is_exit_5_even_with_skip_preflight(
    tmp_path: Path, text: str
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ModelNotFoundError) as err:
        execute(
            {"model": str(model), "output": tmp_path / "out", "skip_preflight": True}, environ={}
        )
    assert err.value.exit_code == ExitCode.MODEL_NOT_FOUND and "config.json" in err.value.message
    _one_paragraph(err.value)


@pytest.mark.parametrize(
    "url", ["sqlite://user:s3cret@/tmp/study.db", "sqlite://:s3cret@localhost/study.db"]
)
def test_a_sqlite_url_with_a_password_is_exit_16(tmp_path: Path, url: str) -> None:
    with pytest.raises(StorageError) as err:
        execute({"output": tmp_path / "out", "storage": url}, environ={})
    assert err.value.exit_code == ExitCode.STORAGE and "SQLite" in err.value.message
    assert "s3cret" not in err.value.paragraph()
    _one_paragraph(err.value)
