"""Benchmark: the answer damage measure (issue 18) against the everyday answers it stands for.

    python benchmarks/bench_answer_kl.py [--model PATH] [--edits 60] [--threads 2]

Prepares a run exactly as `heretic run` does with default settings (demo model unless --model),
then applies random edits from the run's own search space (the strength scaled down at random in
half of them, so gentle edits are as common as strong ones) and for each edit measures:

- per-trial cost: the answer damage (one teacher-forced pass), the first-token KL (the previous
  objective) and the refusal check, in CPU seconds of this process (this machine's cores are
  shared, so wall time measures the neighbours), timed the way a trial runs them;
- the share of harmless answers unchanged for damage_tokens tokens (greedy, token for token), on
  the search prompts and on the held-back verification prompts;
- with --full-k, the gap of the stored top-k reference to the full-vocabulary KL.

It prints the cost table, the unchanged share by damage bin for both measures, their rank
correlation with the unchanged share, and the shaping target the default is derived from: the
upper edge of the highest bin, counted up from the gentlest, whose mean unchanged share is within
2 points of the gentlest bin's (below it the unchanged share stops moving).
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import optuna
import torch
import transformers

from heretic.config.settings import Settings
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.parameters import AblationParams, Kernel
from heretic.progress import NullReporter
from heretic.run.recipe import RunHooks, chat_format, prepare

BIN_EDGES = [10 ** (e / 2) for e in range(-12, 3)]  # 1e-6 .. 10, half-decade bins


def scaled(params: AblationParams, factor: float) -> AblationParams:
    kernels = {
        c: Kernel(
            k.max_weight * factor,
            k.max_weight_position,
            k.min_weight * factor,
            k.min_weight_distance,
        )
        for c, k in params.kernels.items()
    }
    return replace(params, kernels=kernels)


def rank_correlation(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else 0.0


def by_bin(values: list[float], unchanged: list[float]) -> list[tuple[float, float, int, float]]:
    """(low, high, edits, mean unchanged share) for each non-empty bin."""
    rows = []
    edges = [0.0, *BIN_EDGES, math.inf]
    for low, high in zip(edges, edges[1:], strict=False):
        inside = [u for v, u in zip(values, unchanged, strict=True) if low <= v < high]
        if inside:
            rows.append((low, high, len(inside), statistics.fmean(inside)))
    return rows


def derived_target(rows: list[tuple[float, float, int, float]]) -> float:
    floor = rows[0][3]
    target = rows[0][1]
    for _low, high, _n, mean in rows:
        if mean < floor - 0.02:
            break
        target = high
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None, help="model folder or id (default: the demo)")
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-k", action="store_true", help="also measure the top-k gap")
    parser.add_argument(
        "--prompts",
        default="",
        help="folder with real_{harmful,harmless}_{tasks,test}.txt (benchmarks/data): tasks make "
        "the directions, test the evaluation sets (for a model without the demo's prompts)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.disable_progress_bar()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(tempfile.mkdtemp(prefix="bench-answer-kl-"))
    sources = {}
    if args.prompts:
        folder = Path(args.prompts)
        sources = {
            f"{kind}{suffix}": str(folder / f"real_{kind}_{name}.txt")
            for kind in ("harmful", "harmless")
            for suffix, name in (("_prompts", "tasks"), ("_eval_prompts", "test"))
        }
    settings = Settings(
        model=args.model,
        device_map="cpu",
        dtype="float32",
        output=out,
        skip_preflight=True,
        **sources,
    )
    prep = prepare(settings, NullReporter(), RunHooks(), {})
    answer = prep.objective.answer_kl
    assert answer is not None
    verify = AnswerKL(
        prep.loaded,
        prep.prompts.harmless_verify,
        chat=chat_format(settings),
        batcher=prep.evaluator.batcher,
        tokens=settings.damage_tokens,
    )
    verify.prepare()
    full = None
    if args.full_k:
        full = AnswerKL(
            prep.loaded,
            prep.prompts.harmless_eval,
            chat=chat_format(settings),
            batcher=prep.evaluator.batcher,
            tokens=settings.damage_tokens,
            top_k=10**9,
        )
        full.prepare()
    ref = answer.reference
    assert ref is not None
    print(
        f"# bench_answer_kl: {prep.loaded.source}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {args.threads} threads, {time.strftime('%Y-%m-%d')}\n"
        f"{len(answer.prompts)} harmless search prompts (answers {float(ref.answer_len.float().mean()):.1f}"
        f" of {settings.damage_tokens} tokens on average; reference {ref.nbytes / 1e6:.2f} MB at "
        f"k={answer.top_k}), {len(prep.evaluator.harmful)} harmful search prompts "
        f"(refusal check {settings.max_response_tokens} tokens), "
        f"{len(verify.prompts)} held-back harmless prompts"
    )
    rng = random.Random(args.seed)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    rows = []
    for i in range(args.edits):
        params = prep.objective.space.suggest(study.ask())
        factor = 1.0 if i % 2 == 0 else 10 ** rng.uniform(-1.5, 0.0)
        params = scaled(params, factor)
        with prep.objective.ablator.applied(params):
            t = time.process_time()
            damage = answer.measure()
            t_answer = time.process_time() - t
            t = time.process_time()
            first = prep.evaluator.kl_divergence()
            t_first = time.process_time() - t
            t = time.process_time()
            refusals = prep.evaluator.refusals()
            t_refusal = time.process_time() - t
            kept = answer.unchanged()
            kept_verify = verify.unchanged()
            verify_kl = verify.measure().answer_kl
            exact = full.measure().answer_kl if full is not None else None
        rows.append(
            {
                "answer": damage.answer_kl,
                "first": first,
                "refusals": refusals.count,
                "unchanged": sum(kept) / len(kept),
                "unchanged_verify": sum(kept_verify) / len(kept_verify),
                "verify_kl": verify_kl,
                "exact": exact,
                "t_answer": t_answer,
                "t_first": t_first,
                "t_refusal": t_refusal,
            }
        )
    report(rows, len(prep.evaluator.harmful))


def report(rows: list[dict], n_harmful: int) -> None:
    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(
        f"\n## per-trial cost (median of {len(rows)} edits, CPU seconds)\n"
        f"answer damage {med('t_answer'):.3f} | first-token KL {med('t_first'):.3f} | "
        f"refusal check {med('t_refusal'):.3f} | answer damage / refusal check "
        f"{med('t_answer') / med('t_refusal'):.2f}"
    )
    low = [r for r in rows if r["refusals"] <= 0.05 * n_harmful]
    if low:
        t_low = statistics.median(r["t_refusal"] for r in low)
        print(
            f"refusal check on the {len(low)} edits with <= 5% refusals (every answer runs to "
            f"the budget): {t_low:.3f}"
        )
    unchanged = [r["unchanged"] for r in rows]
    for key, label in (("answer", "answer damage"), ("first", "first-token KL")):
        values = [r[key] for r in rows]
        print(
            f"\n## unchanged share by {label} (search prompts; held-back in brackets)\n"
            f"rank correlation with the unchanged share: "
            f"{rank_correlation(values, unchanged):+.2f}"
        )
        bins = by_bin(values, unchanged)
        for low_edge, high, n, mean in bins:
            held = [r["unchanged_verify"] for r in rows if low_edge <= r[key] < high]
            print(
                f"  [{low_edge:.2g}, {high:.2g}): {n:>3} edits, unchanged {mean:.1%} "
                f"({statistics.fmean(held):.1%})"
            )
        print(
            f"  derived target (unchanged share stops moving below it): {derived_target(bins):.2g}"
        )
    exact = [(r["answer"], r["exact"]) for r in rows if r["exact"]]
    if exact:
        gaps = [1 - a / e for a, e in exact if e > 0]
        print(
            f"\n## top-k reference vs full vocabulary: median gap {statistics.median(gaps):.2%}, "
            f"largest {max(gaps):.2%} (the stored measure is a lower bound)"
        )


if __name__ == "__main__":
    main()
