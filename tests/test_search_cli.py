"""End-to-end on the demo model with DEFAULT search ranges: the layer profile finds its early
refusal, the run removes it, patience stops the search and the study resumes to full --trials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heretic.config.settings import Settings
from heretic.engine.patience import StopRule
from tests.test_run_cli import completed_in_journal, prompt_files, run_cli  # noqa: F401


def _args(model: Path, files: dict[str, Path], out: Path, trials: int, *extra: str) -> list[str]:
    return [
        "run",
        "--model",
        str(model),
        "--harmful-prompts",
        str(files["harmful"]),
        "--harmless-prompts",
        str(files["harmless"]),
        "--harmful-eval-prompts",
        str(files["harmful_eval"]),
        "--harmless-eval-prompts",
        str(files["harmless_eval"]),
        "--trials",
        str(trials),
        "--seed",
        "0",
        "--output",
        str(out),
        "--set",
        "device_map=cpu",
        "--set",
        "dtype=float32",
        "--set",
        "max_response_tokens=16",
        "--set",
        "verify_response_tokens=0",
        *extra,
    ]


@pytest.mark.slow
def test_default_space_finds_early_refusal_patience_stops_and_resume_completes(
    demo_model_dir,
    prompt_files,  # noqa: F811 (the fixture imported from test_run_cli)
    cli_env,
    tmp_path,
) -> None:
    out = tmp_path / "out"
    first = run_cli(_args(demo_model_dir, prompt_files, out, 40, "--patience", "6"), cli_env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Layer profile: " in first.stderr
    report = json.loads((out / "report.json").read_text())
    profile = report["layer_profile"]
    # The demo model writes its refusal early: the prior must reach there.
    assert profile["search_ranges"]["max_weight_position"][0] <= 0.2
    assert min(profile["prior"]["writers"]) <= 1
    assert (out / "layer_profile.png").stat().st_size > 0
    assert (out / "study" / "layer_profile.json").is_file()
    assert "layer_profile.png" in (out / "README.md").read_text()
    # Patience: stopped once no refusal was left and six trials brought nothing better.
    assert report["selected"]["refusals"] == 0
    completed = report["trials"]["completed"]
    assert completed < 40, report["trials"]
    assert report["trials"]["stop_reason"].startswith("patience")
    trials = sorted(completed_in_journal(out / "study"), key=lambda t: t.number)
    target = Settings().kl_target
    rule = StopRule(6, 0, "gentlest", 0.5, 5, kl_target=target)  # 1% of 50 prompts = 0
    assert rule.reason(trials) is not None and rule.reason(trials[:-1]) is None  # not one late
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    # Shaping changed what the sampler saw, never what is recorded.
    journal = {t.number: t for t in completed_in_journal(out / "study")}
    for row in rows:
        attrs = journal[row["trial"]].user_attrs
        assert row["kl_divergence"] == attrs["damage"] == attrs["answer_kl"]
        assert row["first_token_kl"] == attrs["kl_divergence"]
        assert journal[row["trial"]].values[1] == max(row["kl_divergence"], target)

    # Resume to the full --trials: remove the done marker, patience off.
    (out / "study" / "DONE.json").unlink()
    again = run_cli(_args(demo_model_dir, prompt_files, out, 40, "--patience", "0"), cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["trials"]["completed"] == 40
    assert report["trials"]["stop_reason"] == "all 40 requested trials ran"
    assert len(completed_in_journal(out / "study")) == 40
