"""CPU memory of heretic's passes against the preflight's estimate, on random-weight models of
real shapes with vocabularies of 32k, 128k, 152k and 262k tokens (benchmarks/random_models.py).

    python benchmarks/bench_memory.py [--shapes gemma3-270m,...] [--batch 64] [--tokens 8]
        [--layers 4] [--frozen]

Each shape runs in its own process: the model is built in bf16, then for each pass (the
residual pass, the KL pass, the refusal check's generation, the answer damage's reference and
its per-trial teacher-forced pass) the peak resident memory is reset
(`/proc/self/clear_refs`) and read back (`VmHWM`); a figure is the peak above the process with
its weights loaded (what earlier passes left alive, like the base log-probs, included; what
they freed is handed back to the kernel first with glibc's malloc_trim, since the allocator
reuses it): what the kernel's OOM killer sees. The estimate is
`heretic.preflight.memory.estimate_memory` for the same batch, response budget and the
prompts' real length. `--layers` cuts the decoder stack (the estimate is computed for the same
cut config); the full Gemma 3 270M shape always runs with all 18 layers. `--frozen` runs the
residual pass once more with the parameters frozen, as the loader did before issue 20 (batch 8
only: at batch 64 the 262k shape would need about 21 GB).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from random_models import SHAPES, build_model, full_vocab_tokenizer, shape_config

from heretic.allocator import pin_mmap_threshold
from heretic.demo.data import demo_prompts
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import LoadedModel
from heretic.engine.residuals import collect_residuals
from heretic.preflight.fit import PYTHON_OVERHEAD_BYTES
from heretic.preflight.memory import count_from_config, estimate_memory

MIB = 2**20


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _trim() -> None:
    """Hand freed heap back to the kernel: glibc keeps what a pass freed resident, and without
    this a pass's peak would include what the passes before it freed (seen: 1.3 GiB of the
    Qwen shape's answer pass was the KL pass's freed heap)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_growth(fn: Callable[[], object], baseline: int) -> tuple[int, float]:
    """(peak resident bytes during `fn` above `baseline`, seconds). The baseline is the
    process with its weights loaded, so what an earlier pass left alive (the base log-probs)
    counts; what it freed does not (_trim)."""
    _trim()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    t = time.perf_counter()
    fn()
    return _status("VmHWM") - baseline, time.perf_counter() - t


def repeat(items: list[str], n: int) -> list[str]:
    return [items[i % len(items)] for i in range(n)]


def measure(
    shape: str,
    layers: int | None,
    batch: int,
    tokens: int,
    frozen: bool,
    kl_prompts: int,
    damage_tokens: int,
) -> dict:
    pin_mmap_threshold()  # as load_model does (heretic/allocator.py)
    config = shape_config(shape, layers)
    tokenizer = full_vocab_tokenizer(config.vocab_size)
    rss0 = _status("VmRSS")
    model = build_model(config)
    loaded = LoadedModel(model, tokenizer, shape, shape, torch.bfloat16, False)  # type: ignore[arg-type]
    weights = _status("VmRSS") - rss0
    arch = describe(model, ["attention", "mlp"])
    demo = demo_prompts()
    harmless, harmful = repeat(demo.harmless, batch), repeat(demo.harmful_eval, batch)
    chat = ChatFormat()
    prompt_tokens = int(
        encode(tokenizer, harmless, chat, torch.device("cpu"))["input_ids"].shape[1]
    )
    evaluator = Evaluator(
        loaded,
        repeat(demo.harmless, kl_prompts),
        harmful,
        markers=["i am sorry"],
        max_new_tokens=tokens,
        chat=chat,
        batcher=Batcher(batch),
    )
    collect_residuals(loaded, arch, harmless[:2], Batcher(2))  # lazy first-call allocations
    base = _status("VmRSS")
    row: dict = {"shape": shape, "layers": config.num_hidden_layers, "vocab": config.vocab_size}
    row["residuals"] = peak_growth(
        lambda: collect_residuals(loaded, arch, harmless, Batcher(batch)), base
    )
    row["kl_base"] = peak_growth(evaluator.compute_base, base)
    row["kl_trial"] = peak_growth(evaluator.kl_divergence, base)
    row["generation"] = peak_growth(evaluator.refusals, base)
    damage = AnswerKL(loaded, harmless, chat=chat, batcher=Batcher(batch), tokens=damage_tokens)
    row["answer_base"] = peak_growth(damage.prepare, base)  # generation + teacher-forced pass
    row["answer_trial"] = peak_growth(damage.measure, base)  # what every trial runs
    if frozen:
        model.requires_grad_(False)
        row["residuals_frozen_b8"] = peak_growth(
            lambda: collect_residuals(loaded, arch, harmless[:8], Batcher(8)), base
        )
        model.requires_grad_(True)
    count = count_from_config(config)
    est = estimate_memory(
        count,
        dtype="bfloat16",
        batch_size=batch,
        max_response_tokens=tokens,
        prompt_tokens=prompt_tokens,
        kl_prompts=kl_prompts,
        damage_tokens=damage_tokens,
    )
    row.update(
        parameters=count.total,
        batch=batch,
        prompt_tokens=prompt_tokens,
        response_tokens=tokens,
        kl_prompts=kl_prompts,
        damage_tokens=damage_tokens,
        weights_measured=weights,
        weights_estimated=est.weights_bytes,
        runtime_estimated=est.runtime_bytes,
        estimate=est.to_dict(),
        process_rss=_status("VmRSS"),
        python_overhead_estimated=PYTHON_OVERHEAD_BYTES,
    )
    return row


def _print(row: dict) -> None:
    passes = [
        "residuals",
        "kl_base",
        "kl_trial",
        "generation",
        "answer_base",
        "answer_trial",
        "residuals_frozen_b8",
    ]
    measured = {k: row[k] for k in passes if k in row}
    peak = max(v[0] for k, v in measured.items() if k != "residuals_frozen_b8")
    print(
        f"{row['shape']:>15} vocab {row['vocab']:>6}, {row['layers']:>2} layers, "
        f"{row['parameters'] / 1e6:.0f}M params; batch {row['batch']} x {row['prompt_tokens']} "
        f"prompt tokens + {row['response_tokens']} new, KL on {row['kl_prompts']} prompts, "
        f"answer damage over {row['damage_tokens']} tokens"
    )
    print(
        f"{'':>15} weights {row['weights_measured'] / MIB:.0f} MiB measured, "
        f"{row['weights_estimated'] / MIB:.0f} MiB estimated"
    )
    for name, (grown, seconds) in measured.items():
        print(f"{'':>15} {name:>20}: +{grown / MIB:6.0f} MiB peak, {seconds:6.2f} s")
    print(
        f"{'':>15} runtime: {peak / MIB:.0f} MiB measured (largest pass), "
        f"{row['runtime_estimated'] / MIB:.0f} MiB estimated; process {row['process_rss'] / MIB:.0f}"
        f" MiB resident after the passes",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=8, help="new tokens of the refusal check")
    parser.add_argument("--layers", type=int, default=4, help="decoder layers (0: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kl-prompts", type=int, default=100, help="harmless prompts of the KL")
    parser.add_argument("--damage-tokens", type=int, default=32, help="answer damage positions")
    parser.add_argument("--frozen", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child process: one shape, JSON out
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        layers = None if args.layers == 0 or args.one == "gemma3-270m" else args.layers
        row = measure(
            args.one,
            layers,
            args.batch,
            args.tokens,
            args.frozen,
            args.kl_prompts,
            args.damage_tokens,
        )
        print("ROW " + json.dumps(row))
        return
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads")
    rows = []
    for shape in args.shapes.split(","):
        cmd = [sys.executable, __file__, "--one", shape, *sys.argv[1:]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        lines = [line for line in out.stdout.splitlines() if line.startswith("ROW ")]
        if out.returncode != 0 or not lines:
            print(f"{shape}: failed (exit {out.returncode}): {out.stderr[-2000:]}")
            continue
        row = json.loads(lines[-1][4:])
        rows.append(row)
        _print(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
