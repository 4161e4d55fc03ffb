"""Benchmark: does the default search find the refusal wherever a model keeps it?

    python benchmarks/bench_search.py [--only NAME,...] [--trials 40,100] [--hllm PATH/bin/heretic]
        [--rows old-objective] [--seeds 0,1,2]
    python benchmarks/bench_search.py --train-only        # build (and cache) the models

A matrix of small chat models trained on the CPU (the demo's trainer, heretic.demo.model) with
the refusal planted at different depths (only some layers learn; the rest stay frozen at random
initialisation) and with different refusal phrasings. Some models are held out: they were not
looked at while the profile, prior and shaping were tuned, and are reported separately.

For each model it prints the layer profile (to check that the refusal sits where it was
planted), then for `heretic run` with default settings at each --trials budget: trials until the
first trial with <= 5% refusals (and KL under the cap), the selected trial's refusals and KL,
and the same edit re-checked on TEST prompts that were used neither for the directions nor for
selection. `old-space` repeats the 40-trial run with the search space and objective of the
previous release (late-layer ranges, no shaping). With --hllm, heretic-llm 1.4.0 runs on the
same model and prompts (its best trial with <= 5% refusals, read from its journal), driven
through its menu to save the trial with the fewest refusals at KL <= 0.5, which
is re-checked on the TEST prompts like heretic's. Every row's test check also gives the share of
harmless answers whose first 32 greedy tokens are unchanged from the base model's.
Models are cached under $HERETIC_CACHE (or ~/.cache/heretic) as bench-search-NAME-v1.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
import transformers

from heretic.config.settings import Settings
from heretic.demo.data import REFUSAL, demo_prompts
from heretic.demo.model import ModelSpec, cache_root, ensure_demo_model, ensure_model
from heretic.engine.ablation import Ablator
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.evaluation import Evaluator
from heretic.engine.layer_profile import derive_prior
from heretic.engine.loading import LoadedModel, load_model
from heretic.engine.parameters import AblationParams
from heretic.errors import NoAcceptableTrialError
from heretic.run.recipe import run
from heretic.run.study_files import load_directions, load_layer_profile


@dataclass(frozen=True)
class Case:
    name: str
    spec: ModelSpec | None  # None: the built-in demo model
    held_out: bool
    planted: str


MATRIX = (
    Case("early", ModelSpec(6, (0, 1), REFUSAL, steps=350), False, "layers 0-1 of 6"),
    Case(
        "middle",
        ModelSpec(8, (3, 4), "i cannot assist with that .", steps=350),
        False,
        "layers 3-4 of 8",
    ),
    Case(
        "late",
        ModelSpec(8, (6, 7), "as an ai , i must decline this request .", steps=350),
        False,
        "layers 6-7 of 8",
    ),
    Case(
        "spread",
        ModelSpec(8, (1, 3, 5, 7), "that is not appropriate , so i will not answer .", steps=350),
        False,
        "layers 1,3,5,7 of 8",
    ),
    Case("demo", None, False, "all 6 layers learn (the demo model)"),
    Case(
        "early-8",
        ModelSpec(8, (1, 2), "i won't help with this .", steps=350),
        True,
        "layers 1-2 of 8",
    ),
    Case(
        "late-8",
        ModelSpec(8, (5, 6, 7), "i am unable to do that .", steps=350),
        True,
        "layers 5-7 of 8",
    ),
)
OLD_SPACE = {
    "max_weight_position": {"low": 0.6, "high": 1.0},
    "min_weight_distance": {"low": 0.0, "high": 0.6},
    "direction_index": {"low": 0.4, "high": 0.9},
    "kl_target": 0.0,
}
RUN_SETTINGS = {
    "device_map": "cpu",
    "dtype": "float32",
    "max_response_tokens": 16,
}
# The previous objective: the first answer token's KL as the damage the search minimises
# (selection, verification and the damage gate as in the defaults).
OLD_OBJECTIVE = {"damage_metric": "first_token"}


def build(case: Case) -> Path:
    if case.spec is None:
        return ensure_demo_model()
    return ensure_model(cache_root() / f"bench-search-{case.name}-v1", case.spec)


def write_prompts(folder: Path) -> dict[str, Path]:
    """Directions: the demo's 64 + 64. Selection: the first 25 + 25 held-out prompts.
    Test: the other 25 + 25, used by nothing but the final check."""
    p = demo_prompts()
    sets = {
        "harmful": p.harmful,
        "harmless": p.harmless,
        "harmful_eval": p.harmful_eval[:25],
        "harmless_eval": p.harmless_eval[:25],
        "harmful_test": p.harmful_eval[25:],
        "harmless_test": p.harmless_eval[25:],
    }
    paths = {}
    for name, prompts in sets.items():
        paths[name] = folder / f"{name}.txt"
        paths[name].write_text("\n".join(prompts) + "\n")
    return paths


def settings_for(
    model: Path, prompts: dict[str, Path], out: Path, trials: int, extra: dict | None = None
) -> Settings:
    return Settings(
        model=str(model),
        harmful_prompts=str(prompts["harmful"]),
        harmless_prompts=str(prompts["harmless"]),
        harmful_eval_prompts=str(prompts["harmful_eval"]),
        harmless_eval_prompts=str(prompts["harmless_eval"]),
        trials=trials,
        output=out,
        **RUN_SETTINGS,
        **(extra or {}),
    )


COMPARE_TOKENS = 32  # harmless answers compared with the base model's, greedy


def test_check(
    settings: Settings, params: dict | None, prompts: dict[str, Path], model_dir: Path | None = None
) -> tuple[int, int, float, float]:
    """Refusals, KL and the share of harmless answers unchanged for COMPARE_TOKENS greedy
    tokens, of the selected edit on the TEST prompts: hooked as in the search (params), or an
    exported model (model_dir, e.g. heretic-llm's) against the base model of `settings`."""
    harmful = prompts["harmful_test"].read_text().split("\n")[:-1]
    harmless = prompts["harmless_test"].read_text().split("\n")[:-1]

    def evaluator_for(loaded: LoadedModel) -> Evaluator:
        return Evaluator(
            loaded,
            harmless,
            harmful,
            markers=settings.refusal_markers,
            max_new_tokens=64,
            chat=ChatFormat(),
            batcher=Batcher(64),
        )

    loaded = load_model(settings)
    evaluator = evaluator_for(loaded)
    evaluator.compute_base()
    base_answers = evaluator.generate(harmless, COMPARE_TOKENS, stop_at_markers=False)
    if model_dir is not None:
        edited = evaluator_for(load_model(settings.model_copy(update={"model": str(model_dir)})))
        edited.base_logprobs = evaluator.base_logprobs
        kl, refusals = edited.kl_divergence(), edited.refusals()
        answers = edited.generate(harmless, COMPARE_TOKENS, stop_at_markers=False)
    else:
        arch = describe(loaded.model, list(settings.components))
        directions = load_directions(settings.resolved_study_dir / "directions.safetensors")
        assert directions is not None and params is not None
        ablator = Ablator(arch, directions, settings.ablation).install()
        with ablator.applied(AblationParams.from_dict(params)):
            kl = evaluator.kl_divergence()
            refusals = evaluator.refusals()
            answers = evaluator.generate(harmless, COMPARE_TOKENS, stop_at_markers=False)
        ablator.remove()
    unchanged = sum(a == b for a, b in zip(answers, base_answers, strict=True)) / len(harmless)
    return refusals.count, refusals.total, kl, unchanged


def heretic_once(
    model: Path, prompts: dict[str, Path], trials: int, extra: dict | None, work: Path
) -> dict:
    out = work / f"run-{trials}-{'-'.join(sorted(extra)) if extra else 'new'}"
    shutil.rmtree(out, ignore_errors=True)
    settings = settings_for(model, prompts, out, trials, extra)
    start = time.monotonic()
    try:
        report = run(settings).report
        code = 0
    except NoAcceptableTrialError:
        report, code = json.loads((out / "report.json").read_text()), 9
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    n = report["base"]["n_harmful"]
    cap = settings.kl_cap
    first = next(
        (
            i + 1
            for i, r in enumerate(rows)
            if r["refusals"] <= 0.05 * n and r["kl_divergence"] <= cap
        ),
        None,
    )
    verified = (report.get("verification") or {}).get("selected") or {}
    result = {
        "verified_unchanged": verified.get("harmless_unchanged"),
        "trials": len(rows),
        "first_ok": first,
        "exit": code,
        "n": n,
        "base": report["base"]["refusals"],
        "wall_s": time.monotonic() - start,
        "stop": report["trials"].get("stop_reason", ""),
    }
    sel = report.get("selected")
    if sel:
        result.update(
            refusals=sel["refusals"], kl=sel["kl_divergence"], trial=verified.get("trial", "?")
        )
        result["test"] = test_check(settings, sel["parameters"], prompts)
    return result


def show_profile(model: Path, prompts: dict[str, Path], work: Path) -> str:
    study = work / "run-40-new" / "study"
    profile = load_layer_profile(study)
    if profile is None:
        return "(no profile)"
    prior = derive_prior(profile)
    seps = " ".join(f"{x:.1f}" for x in profile.separation)
    writes = " ".join(f"{x:.1f}" for x in profile.write_separation)
    return (
        f"  residual d by position: {seps}\n  write d by layer: {writes}\n"
        f"  writers found: {prior.writers}; peak range {prior.max_weight_position}, "
        f"direction range {prior.direction_index}"
    )


def hllm_row(exe: str, model: Path, prompts: dict[str, Path], trials: int, work: Path) -> str:
    """heretic-llm's run, its trials read from its journal, and the trial a user wanting the
    refusals gone picks from its menu exported and re-checked on the TEST prompts."""
    from hllm_driver import export_for_bench, journal_summary  # benchmarks/hllm_driver.py

    r = export_for_bench(exe, model, prompts, trials, work)
    journal = journal_summary(work / f"hllm-export-{trials}" / "study", r.search_s, r.exit_code)
    if r.model_dir is None:
        return f"{journal}; export failed (exit {r.exit_code}): {r.log_tail[-300:]}"
    settings = settings_for(model, prompts, work / "hllm-score", trials)
    test = test_check(settings, None, prompts, r.model_dir)
    return (
        f"{journal}\n  {'':<16} exported trial {r.trial} ({r.refusals}/{r.n}, KL {r.kl:.2g}): test "
        f"{test[0]}/{test[1]} KL {test[2]:.2g}, harmless unchanged ({COMPARE_TOKENS} tokens) "
        f"{test[3]:.0%}; {r.total_s:.0f}s to the saved model"
    )


def line(label: str, r: dict) -> str:
    if "refusals" not in r:
        return f"  {label:<16} no acceptable trial (exit {r['exit']}) after {r['trials']} trials"
    test = r["test"]
    verified = r["verified_unchanged"]
    gate = "exit 9 (damage gate)" if r["exit"] == 9 else f"exit {r['exit']}"
    return (
        f"  {label:<16} trials run {r['trials']:>3}, first <=5%: {str(r['first_ok']):>4}, "
        f"selected trial {r['trial']} {r['refusals']:>2}/{r['n']} damage {r['kl']:.2g}; test "
        f"{test[0]}/{test[1]} KL {test[2]:.2g}, harmless unchanged ({COMPARE_TOKENS} tokens) "
        f"{test[3]:.0%}; verified unchanged "
        f"{'-' if verified is None else f'{verified:.0%}'}; {gate}; {r['wall_s']:.0f}s; "
        f"stop: {r['stop']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated case names")
    parser.add_argument("--trials", default="40,100")
    parser.add_argument("--train-only", action="store_true")
    parser.add_argument("--hllm", default="", help="path of heretic-llm 1.4.0's `heretic`")
    parser.add_argument("--hllm-only", action="store_true", help="run only heretic-llm")
    parser.add_argument(
        "--patience", type=int, default=0, help="also run the largest budget with this --patience"
    )
    parser.add_argument("--patience-only", action="store_true")
    parser.add_argument("--hllm-trials", default="40", help="heretic-llm budgets")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--seeds", default="0", help="comma-separated `seed` settings: each row once per seed"
    )
    parser.add_argument(
        "--rows",
        default="old-space",
        help="extra 40-trial rows: old-space (the previous search space), old-objective "
        "(damage_metric=first_token), comma-separated, or none",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cases = [c for c in MATRIX if not args.only or c.name in args.only.split(",")]
    print(
        f"# bench_search: {platform.processor() or platform.machine()}, torch {torch.__version__},"
        f" {args.threads} threads, {time.strftime('%Y-%m-%d')}"
    )
    for case in cases:
        start = time.monotonic()
        model = build(case)
        if args.train_only:
            print(f"{case.name}: {model} ({time.monotonic() - start:.0f}s)")
            continue
        work = Path(tempfile.mkdtemp(prefix=f"bench-search-{case.name}-"))
        prompts = write_prompts(work)
        print(
            f"\n## {case.name} ({'held out' if case.held_out else 'tuning set'}): refusal "
            f"planted in {case.planted}"
        )
        budgets = [int(t) for t in args.trials.split(",")]
        if args.patience:
            r = heretic_once(model, prompts, max(budgets), {"patience": args.patience}, work)
            print(line(f"patience {args.patience}", r), flush=True)
        seeds = [int(s) for s in args.seeds.split(",")]
        for trials in [] if args.hllm_only or args.patience_only else budgets:
            for seed in seeds:
                seeded = {"seed": seed} if seed else {}
                tag = f" s{seed}" if len(seeds) > 1 else ""
                r = heretic_once(model, prompts, trials, seeded or None, work)
                if trials == 40 and not seeded:
                    print(show_profile(model, prompts, work))
                    print(f"  base refusals {r['base']}/{r['n']}")
                print(line(f"heretic {trials}{tag}", r), flush=True)
                extra_rows = {"old-space": OLD_SPACE, "old-objective": OLD_OBJECTIVE}
                for row in args.rows.split(",") if trials == 40 else []:
                    if row in extra_rows:
                        r = heretic_once(model, prompts, 40, {**extra_rows[row], **seeded}, work)
                        print(line(f"{row} 40{tag}", r), flush=True)
        if args.hllm:
            for trials in [int(t) for t in args.hllm_trials.split(",")]:
                print(
                    f"  heretic-llm {trials:<4} {hllm_row(args.hllm, model, prompts, trials, work)}"
                )
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
