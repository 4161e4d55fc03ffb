"""Benchmark: abliterate a small mixture-of-experts chat model end to end with `heretic run`'s
own code, and compare with an edit of attention alone (what tools that skip fused experts do).

    python benchmarks/bench_moe.py [--trials 50] [--kl-cap 0.05] [--threads 2] [--seed 0]

The model (heretic/demo/moe.py) is a Qwen3-MoE architecture in miniature: fused experts, 4
experts per layer with 2 routed per token, a dense first layer; trained on the CPU to refuse one
class of requests, exactly as the dense demo model (same prompts, tokenizer and training loop),
and cached after the first run. Prints the figures; nothing is timed inside the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.demo.moe import ensure_moe_model
from heretic.demo.settings import DEMO_LAYER
from heretic.engine.architecture import describe
from heretic.engine.loading import load_model
from heretic.errors import NoAcceptableTrialError
from heretic.run.recipe import run


def _prompt_files(folder: Path) -> dict[str, str]:
    prompts = demo_prompts()
    files = {}
    for key in ("harmful", "harmless", "harmful_eval", "harmless_eval"):
        path = folder / f"{key}.txt"
        path.write_text("\n".join(getattr(prompts, key)) + "\n", encoding="utf-8")
        files[f"{key}_prompts"] = str(path)
    return files


def _search(model: Path, folder: Path, args: argparse.Namespace, components: list[str]) -> dict:
    settings = Settings(
        **{
            **DEMO_LAYER,
            **_prompt_files(folder),
            "model": str(model),
            "output": folder / "out",
            "trials": args.trials,
            "seed": args.seed,
            "kl_cap": args.kl_cap,
            "components": components,
        }
    )
    t = time.perf_counter()
    try:
        report: dict[str, Any] | None = run(settings).report
    except NoAcceptableTrialError:
        report = json.loads((folder / "out" / "report.json").read_text())
    report = dict(report or {})
    report["wall_s"] = time.perf_counter() - t
    return report


def _line(name: str, report: dict) -> str:
    base, sel = report["base"], report.get("selected")
    durations = [t["duration_s"] for t in _trials(report) if t.get("duration_s")]
    median = f"{statistics.median(durations) * 1000:.0f} ms" if durations else "-"
    head = f"{name}: base {base['refusals']}/{base['n_harmful']} refusals"
    if sel is None:
        best = min(report["pareto_front"], key=lambda p: (p["refusals"], p["kl_divergence"]))
        return (
            f"{head}; no trial within the KL cap; fewest refusals on the Pareto front: "
            f"{best['refusals']}/{base['n_harmful']} at KL {best['kl_divergence']:.2e}; "
            f"per trial median {median}; wall {report['wall_s']:.1f} s"
        )
    ver = report.get("verification") or {}
    check = (
        f" (re-check with {ver['max_response_tokens']} tokens: base "
        f"{ver['base_refusals']}, selected {ver['selected_refusals']})"
        if ver
        else ""
    )
    return (
        f"{head} -> selected {sel['refusals']}/{base['n_harmful']} "
        f"({100 * sel['refusals'] / base['n_harmful']:.0f}%) at KL {sel['kl_divergence']:.2e}"
        f"{check}; per trial median {median}; wall {report['wall_s']:.1f} s "
        f"(export {report['timings_s'].get('export', 0):.2f} s)"
    )


def _trials(report: dict) -> list[dict]:
    path = Path(report["settings"]["output"]) / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--kl-cap", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    t = time.perf_counter()
    model = ensure_moe_model()
    ready = time.perf_counter() - t
    loaded = load_model(Settings(model=str(model), device_map="cpu", dtype="float32"))
    arch = describe(loaded.model, ["attention", "mlp"])
    kinds = ["moe" if entry.is_moe else "dense" for entry in arch.layers]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, {args.threads} threads, load average "
        f"{os.getloadavg()[0]:.1f} (other work slows the per-trial times, not the results)"
    )
    print(
        f"model: {arch.model_type}, {arch.num_layers} layers ({', '.join(kinds)}), "
        f"{sum(p.numel() for p in loaded.model.parameters()):,} parameters; ready in {ready:.1f} s "
        "(cached, or trained now)"
    )
    print(f"training record: {(model / 'heretic_demo.json').read_text().strip()}")
    del loaded
    for name, components in (
        ("attention + experts", ["attention", "mlp"]),
        ("attention only", ["attention"]),
    ):
        with tempfile.TemporaryDirectory() as folder:
            print(
                _line(
                    f"{name}, {args.trials} trials, KL cap {args.kl_cap}",
                    _search(model, Path(folder), args, components),
                ),
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
