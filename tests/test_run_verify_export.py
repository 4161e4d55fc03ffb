"""End-to-end on the demo model: the report verifies the chosen edit on prompts the search never
scored, and `heretic export --trial N` writes another trial of the finished study, running none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_run_cli import completed_in_journal, run_cli

from heretic.config.settings import Settings
from heretic.engine.batching import Batcher
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import load_model
from heretic.engine.prompts import load_prompt_sets
from heretic.run.recipe import chat_format

pytestmark = pytest.mark.slow
TRIALS = 30


@pytest.fixture(scope="module")
def finished(demo_model_dir, tmp_path_factory, heretic_cache) -> tuple[Path, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")}
    env.update(HERETIC_CACHE=str(heretic_cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    out = tmp_path_factory.mktemp("verify") / "out"
    result = run_cli(["run", "--trials", str(TRIALS), "--output", str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, env


def test_report_verifies_on_prompts_the_search_never_scored(finished) -> None:
    out, _ = finished
    report = json.loads((out / "report.json").read_text())
    v = report["verification"]
    sets = load_prompt_sets(Settings())
    assert v["held_out"] is True
    assert v["prompts"] == {"harmful": 15, "harmless": 15}
    assert v["search_prompts"] == {"harmful": 35, "harmless": 35}
    assert report["base"]["n_harmful"] == 35  # the search's counts are on its own part
    for kind in ("harmful", "harmless"):
        for example in v["examples"][kind]:
            assert example["prompt"] in getattr(sets, f"{kind}_verify")
            assert example["prompt"] not in getattr(sets, f"{kind}_eval")
    sel = v["selected"]
    assert sel["trial"] == report["selected_trial"]
    assert v["base"]["refusals"] >= 14  # the demo refuses what it was trained to refuse
    assert sel["refusals"] <= 1 and sel["kl_divergence"] <= 0.05
    assert 0.0 <= sel["harmless_unchanged"] <= 1.0
    assert 0.0 <= sel["first_sentence_changed"] <= 1.0
    # gentlest verifies the policy's next best trials and the front's neighbours, up to 4.
    front = {row["trial"] for row in report["pareto_front"]}
    done = {json.loads(line)["trial"] for line in (out / "trials.jsonl").read_text().splitlines()}
    alternatives = {alt["trial"] for alt in v["alternatives"]}
    assert 1 <= len(alternatives) <= 4 and alternatives <= done - {sel["trial"]}
    assert front - {sel["trial"]} and (front - {sel["trial"]}) & alternatives
    assert report["policy"]["chosen_by"] == "gentlest"
    assert report["policy"]["rule"] in ("target, verified", "fewest-refusals, verified")
    assert f"trial {sel['trial']}" in report["policy"]["why"]
    assert report["gate"]["passed"] is True


def test_verification_figures_are_what_the_export_does(finished, demo_model_dir) -> None:
    """Re-measure the exported model (plain transformers) on the verification split."""
    out, _ = finished
    report = json.loads((out / "report.json").read_text())
    v = report["verification"]
    sets = load_prompt_sets(Settings())
    settings = Settings(device_map="cpu", dtype="float32", max_response_tokens=16)
    kwargs = dict(
        markers=settings.refusal_markers,
        max_new_tokens=v["max_response_tokens"],
        chat=chat_format(settings),
        batcher=Batcher(64),
    )
    base = load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))
    edited = load_model(Settings(model=str(out / "model"), device_map="cpu", dtype="float32"))
    base_eval = Evaluator(base, sets.harmless_verify, sets.harmful_verify, **kwargs)
    base_eval.compute_base()
    edited_eval = Evaluator(edited, sets.harmless_verify, sets.harmful_verify, **kwargs)
    edited_eval.base_logprobs = base_eval.base_logprobs
    assert base_eval.refusals().count == v["base"]["refusals"]
    assert edited_eval.refusals().count == v["selected"]["refusals"]
    assert edited_eval.kl_divergence() == pytest.approx(v["selected"]["kl_divergence"], abs=1e-4)
    n = v["compare_tokens"]
    before = base_eval.generate(sets.harmless_verify, n, stop_at_markers=False)
    after = edited_eval.generate(sets.harmless_verify, n, stop_at_markers=False)
    same = sum(a == b for a, b in zip(before, after, strict=True)) / len(before)
    assert same == pytest.approx(v["selected"]["harmless_unchanged"], abs=1e-3)


def test_model_card_holds_verification_pairs_and_markers(finished) -> None:
    out, _ = finished
    card = (out / "README.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert "## Verification (prompts the search never saw)" in card
    assert "15 harmful and 15 harmless prompts that the search never scored" in card
    assert "harmless answers unchanged" in card
    assert "### Before and after: harmful prompts" in card
    assert "### Before and after: harmless prompts" in card
    assert "## What these numbers cannot tell" in card
    for marker in report["refusal_markers"]:
        assert f"`{marker}`" in card
    assert "heretic export --trial N" in card


def test_export_trial_writes_another_trial_without_running_any(finished) -> None:
    out, env = finished
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    # The gentlest edit of the study: most refusals, then lowest KL (not the selected one).
    row = max(rows, key=lambda r: (r["refusals"], -r["kl_divergence"]))
    number = row["trial"]
    assert number != report["selected_trial"]
    before = len(completed_in_journal(out / "study"))
    result = run_cli(["export", "--trial", str(number), "--output", str(out), "--json"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(completed_in_journal(out / "study")) == before == TRIALS
    dest = out / f"trial-{number}"
    exported = json.loads((dest / "report.json").read_text())
    assert json.loads(result.stdout)["selected_trial"] == number
    assert exported["selected_trial"] == number
    assert exported["policy"]["chosen_by"] == "manual"
    assert exported["selected"]["refusals"] == row["refusals"]
    assert exported["selected"]["kl_divergence"] == pytest.approx(row["kl_divergence"])
    # Its alternatives are the front's nearest trials; the run's selected trial, measured again
    # there, has the same verified figures (greedy decoding is deterministic).
    alts = {a["trial"]: a["verification"] for a in exported["verification"]["alternatives"]}
    front = {r["trial"] for r in report["pareto_front"]}
    assert alts and set(alts) <= front
    if report["selected_trial"] in alts:
        again, first = alts[report["selected_trial"]], report["verification"]["selected"]
        assert again["refusals"] == first["refusals"]
        assert again["harmless_unchanged"] == first["harmless_unchanged"]
        assert again["kl_divergence"] == pytest.approx(first["kl_divergence"], abs=1e-6)
    assert "chosen by hand" in (dest / "README.md").read_text()
    model = load_model(Settings(model=str(dest / "model"), device_map="cpu", dtype="float32"))
    assert model.model.config.num_hidden_layers >= 1
    # The selected model of the run is untouched.
    assert json.loads((out / "report.json").read_text()) == report


def test_export_of_a_trial_the_study_lacks_is_a_clear_error(finished) -> None:
    out, env = finished
    result = run_cli(["export", "--trial", "9999", "--output", str(out)], env)
    assert result.returncode == 14, result.stderr[-2000:]
    assert "has no completed trial 9999" in result.stderr
    assert "Pareto front:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "trial-9999").exists()


def test_export_without_a_study_is_a_clear_error(tmp_path, cli_env) -> None:
    result = run_cli(["export", "--trial", "1", "--output", str(tmp_path / "nothing")], cli_env)
    assert result.returncode == 14
    assert "holds no study" in result.stderr and "Traceback" not in result.stderr


def test_a_refusal_the_budget_cannot_remove_ends_with_exit_nine(tmp_path, cli_env) -> None:
    """Strengths too weak to remove anything: every trial keeps nearly all refusals at a tiny
    KL. The run must not export that model as if it worked."""
    out = tmp_path / "out"
    result = run_cli(
        [
            "run",
            "--trials",
            "3",
            "--output",
            str(out),
            "--set",
            "max_weight=0.0,0.02",
            "--set",
            "min_weight_fraction=0,0.1",
        ],
        cli_env,
    )
    assert result.returncode == 9, result.stderr[-2000:]
    assert "at most 20% of the harmful prompts refused" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["selected_trial"] is None and report["trials"]["completed"] == 3
    assert (
        min(
            row["refusals"]
            for row in map(json.loads, (out / "trials.jsonl").read_text().splitlines())
        )
        > 0.2 * report["base"]["n_harmful"]
    )
    assert not (out / "model").exists()
