"""Benchmark: residual-pass time and per-trial time on the built-in demo model.

    python benchmarks/bench_demo.py [--trials 30] [--threads 2]

Prints the figures; nothing is timed inside the test suite. Each phase uses the engine's own
code (hooks, evaluator, ablator), so the numbers are what `heretic run` spends.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import optuna
import torch

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.demo.model import ensure_demo_model
from heretic.demo.settings import DEMO_LAYER
from heretic.engine.ablation import Ablator
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.directions import compute_directions
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import load_model
from heretic.engine.objective import TrialObjective
from heretic.engine.residuals import collect_residuals
from heretic.engine.space import SearchSpace


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    t = time.perf_counter()
    path = ensure_demo_model()
    prepare = time.perf_counter() - t
    settings = Settings(model=str(path), **DEMO_LAYER)
    t = time.perf_counter()
    loaded = load_model(settings)
    load = time.perf_counter() - t
    arch = describe(loaded.model, list(settings.components))
    prompts = demo_prompts()
    batcher = Batcher(settings.max_batch_size)

    t = time.perf_counter()
    harmful = collect_residuals(loaded, arch, prompts.harmful, batcher)
    harmless = collect_residuals(loaded, arch, prompts.harmless, batcher)
    directions = compute_directions(harmful, harmless)
    residuals = time.perf_counter() - t

    evaluator = Evaluator(
        loaded,
        prompts.harmless_eval,
        prompts.harmful_eval,
        markers=settings.refusal_markers,
        max_new_tokens=settings.max_response_tokens,
        chat=ChatFormat(),
        batcher=batcher,
    )
    t = time.perf_counter()
    evaluator.compute_base()
    base = evaluator.refusals()
    base_eval = time.perf_counter() - t
    ablator = Ablator(arch, directions, settings.ablation).install()
    objective = TrialObjective(ablator, evaluator, SearchSpace(settings, arch.num_layers))
    study = optuna.create_study(
        directions=["minimize", "minimize"],
        sampler=optuna.samplers.TPESampler(
            multivariate=True, n_startup_trials=settings.startup_trials, seed=0
        ),
    )
    engine_s, total_s = [], []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        trial = study.ask()
        values = objective(trial)
        study.tell(trial, list(values))
        total_s.append(time.perf_counter() - t0)
        engine_s.append(trial.user_attrs["duration_s"])

    n_prompts = len(prompts.harmful) + len(prompts.harmless)
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
        f"{args.threads} threads"
    )
    print(f"demo model ready (cached or trained): {prepare:.2f} s")
    print(f"load: {load:.2f} s")
    print(
        f"residual pass: {residuals:.3f} s for {n_prompts} prompts "
        f"({1000 * residuals / n_prompts:.2f} ms/prompt), {arch.num_layers + 1} positions"
    )
    print(f"base evaluation: {base_eval:.3f} s ({base.count}/{base.total} refusals)")
    print(
        f"per trial (KL + refusal check), median of {args.trials}: "
        f"{statistics.median(engine_s) * 1000:.1f} ms; with Optuna ask/tell: "
        f"{statistics.median(total_s) * 1000:.1f} ms"
    )
    print(f"best trial: {min(study.best_trials, key=lambda t: t.values).values}")


if __name__ == "__main__":
    main()
