"""GPU benchmark on random-weight models of real shapes (no download): residual-pass time and
per-trial time with the engine's own code, in bf16 and in 4-bit, both ablation variants.

    python benchmarks/bench_gpu.py --config tests/fixtures/configs/llama3-8b/config.json \
        [--config tests/fixtures/configs/gemma3-270m/config.json ...] \
        [--prompts 400] [--eval 100] [--tokens 48] [--trials 5] [--json OUT.json]

`--config` may be repeated. The Gemma 3 270M shape (a 262,144-token vocabulary, hidden 640) is
the large-vocabulary case of issue 20: for every shape the script also prints the output
head's cost, one forward of 8 prompts with `logits_to_keep=1` as heretic runs it (parameters
requiring grad) and with the parameters frozen (how the loader left them before issue 20), in
time and peak memory: on the CPU the frozen one expands the head once per prompt.

Random weights never say a refusal marker or end a sequence, so every refusal check runs to
the full token budget and every base answer the answer damage is measured along is 32 tokens
long: the per-trial figures are the worst case for those budgets. A trial is the answer damage
plus the refusal check; both are printed, with the first-token KL pass of the old objective. The prompts are
the demo prompt sets (repeated to the asked count) through the demo tokenizer; their ids are
valid in any vocabulary of 129 tokens or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, BitsAndBytesConfig

from heretic.demo.data import demo_prompts
from heretic.demo.model import build_tokenizer
from heretic.engine.ablation import Ablator
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.directions import compute_directions
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import LoadedModel
from heretic.engine.parameters import AblationParams, Kernel


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build(config_path: Path, quantized: bool, device: str) -> LoadedModel:
    config = AutoConfig.from_pretrained(config_path.parent)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    # Parameters stay requiring grad, as heretic's loader leaves them (issue 20); every pass
    # runs under inference_mode.
    if quantized:
        # Quantize through a save/load round trip: the path users take.
        tmp = Path("/tmp/heretic-bench-model")
        model.save_pretrained(tmp)
        del model
        model = AutoModelForCausalLM.from_pretrained(
            tmp,
            device_map=device,
            quantization_config=BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            ),
        )
    else:
        model = model.to(device)
    tokenizer = build_tokenizer()
    return LoadedModel(
        model,
        tokenizer,
        config_path.parent.name,
        str(config_path.parent),
        torch.bfloat16,
        quantized,
    )


def repeat(items: list[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


def bench(loaded: LoadedModel, args: argparse.Namespace, variant: str) -> dict[str, float]:
    from heretic.engine.residuals import collect_residuals

    arch = describe(loaded.model, ["attention", "mlp"])
    demo = demo_prompts()
    batcher = Batcher(args.batch)
    _sync()
    t = time.perf_counter()
    harmful = collect_residuals(loaded, arch, repeat(demo.harmful, args.prompts), batcher)
    harmless = collect_residuals(loaded, arch, repeat(demo.harmless, args.prompts), batcher)
    directions = compute_directions(harmful, harmless, device=loaded.device)
    _sync()
    residual_s = time.perf_counter() - t
    evaluator = Evaluator(
        loaded,
        repeat(demo.harmless_eval, args.eval),
        repeat(demo.harmful_eval, args.eval),
        markers=["sorry"],
        max_new_tokens=args.tokens,
        chat=ChatFormat(),
        batcher=batcher,
    )
    evaluator.compute_base()
    # The search's damage (issue 18): the base answers are built before any edit.
    answer = AnswerKL(loaded, evaluator.harmless, chat=ChatFormat(), batcher=batcher)
    answer.prepare()
    ablator = Ablator(arch, directions, variant).install()
    last = arch.num_layers - 1
    params = AblationParams(
        {c: Kernel(1.0, 0.7 * last, 0.5, 0.4 * last) for c in ("attention", "mlp")},
        "global",
        0.6 * last + 1,
    )
    times: dict[str, list[float]] = {"damage": [], "first_token": [], "refusals": []}
    for _ in range(args.trials):
        with ablator.applied(params):
            for key, fn in (
                ("damage", answer.measure),
                ("first_token", evaluator.kl_divergence),
                ("refusals", evaluator.refusals),
            ):
                _sync()
                t = time.perf_counter()
                fn()
                _sync()
                times[key].append(time.perf_counter() - t)
    ablator.remove()
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "residual_s": residual_s,
        # A trial: the answer damage and the refusal check (the first-token KL comes from the
        # damage pass); the first-token pass is timed for comparison with the old objective.
        "trial_median_s": medians["damage"] + medians["refusals"],
        "damage_s": medians["damage"],
        "first_token_s": medians["first_token"],
        "refusals_s": medians["refusals"],
        "batch_size": batcher.batch_size,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0,
    }


def head_cost(loaded: LoadedModel, n: int = 8) -> dict[str, float]:
    """One forward of `n` prompts with logits_to_keep=1, parameters requiring grad and frozen:
    seconds and peak memory above the weights (GiB; the GPU allocator's peak, 0 on the CPU)."""
    from heretic.engine.chat import encode

    inputs = encode(
        loaded.tokenizer, repeat(demo_prompts().harmless, n), ChatFormat(), loaded.device
    )
    out: dict[str, float] = {}
    for name, frozen in (("head_unfrozen", False), ("head_frozen", True)):
        loaded.model.requires_grad_(not frozen)
        with torch.inference_mode():
            loaded.model(**inputs, use_cache=False, logits_to_keep=1)  # warm-up
            _sync()
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
            t = time.perf_counter()
            loaded.model(**inputs, use_cache=False, logits_to_keep=1)
            _sync()
            out[f"{name}_s"] = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        out[f"{name}_peak_gib"] = max(0, peak - before) / 2**30
    loaded.model.requires_grad_(True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, action="append", required=True)
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--eval", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--modes", default="bf16,4bit")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda:0", help="cpu works for a smoke test")
    args = parser.parse_args()
    rows = []
    on_gpu = args.device.startswith("cuda")
    name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    print(f"device: {name}, torch {torch.__version__}")
    for config, mode in [(c, m) for c in args.config for m in args.modes.split(",")]:
        loaded = build(config, quantized=(mode == "4bit"), device=args.device)
        head = head_cost(loaded)
        print(
            f"{config.parent.name:>14} {mode:>5} output head, 8 prompts: "
            f"{head['head_unfrozen_s']:.3f} s, +{head['head_unfrozen_peak_gib']:.2f} GiB "
            f"(frozen parameters: {head['head_frozen_s']:.3f} s, "
            f"+{head['head_frozen_peak_gib']:.2f} GiB)",
            flush=True,
        )
        rows.append({"model": config.parent.name, "mode": mode, "variant": "head", **head})
        for variant in ("standard", "norm-preserving"):
            if on_gpu:
                torch.cuda.reset_peak_memory_stats()
            row = {
                "model": config.parent.name,
                "mode": mode,
                "variant": variant,
                **bench(loaded, args, variant),
            }
            rows.append(row)
            print(
                f"{row['model']:>14} {mode:>5} {variant:>16}: residuals "
                f"{row['residual_s']:.1f} s ({2 * args.prompts} prompts, batch "
                f"{row['batch_size']}), trial {row['trial_median_s']:.2f} s "
                f"({args.eval}+{args.eval} prompts, {args.tokens} tokens): answer damage "
                f"{row['damage_s']:.2f} s, refusal check {row['refusals_s']:.2f} s, first-token "
                f"KL {row['first_token_s']:.2f} s; peak {row['peak_gib']:.1f} GiB",
                flush=True,
            )
        del loaded
        if on_gpu:
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
