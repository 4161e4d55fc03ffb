"""Parameter counts from config.json only, against real models and published sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from heretic.errors import ModelNotFoundError
from heretic.preflight.memory import (
    NF4_BYTES_PER_PARAM,
    count_parameters,
    estimate_memory,
    weight_bytes,
)

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def _tiny(kind: str, tied: bool) -> LlamaConfig | Qwen2Config:
    common: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 500,
        "max_position_embeddings": 128,
        "tie_word_embeddings": tied,
    }
    return LlamaConfig(**common) if kind == "llama" else Qwen2Config(**common)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [False, True])
def test_count_matches_real_tiny_model(tmp_path: Path, kind: str, tied: bool) -> None:
    config = _tiny(kind, tied)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path)  # config.json and real weights
    real = sum(p.numel() for p in model.parameters())
    count = count_parameters(str(tmp_path))
    assert abs(count.total - real) <= 0.02 * real
    assert count.embedding == 500 * 64
    assert count.lm_head == (0 if tied else 500 * 64)
    linear_real = sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not model.lm_head
    )
    assert count.linear == linear_real
    assert (count.num_layers, count.hidden_size, count.num_kv_heads, count.head_dim) == (
        3,
        64,
        2,
        16,
    )


@pytest.mark.parametrize(
    ("name", "published"),
    [("llama3-8b", 8.03e9), ("qwen2.5-32b", 32.76e9), ("llama3-70b", 70.55e9)],
)
def test_full_size_configs_on_meta_device(name: str, published: float) -> None:
    count = count_parameters(str(CONFIGS / name))
    assert abs(count.total - published) <= 0.02 * published
    assert count.total == count.embedding + count.lm_head + count.linear + count.other


def test_llama3_8b_exact_and_memory() -> None:
    count = count_parameters(str(CONFIGS / "llama3-8b"))
    assert count.total == 8_030_261_248
    assert weight_bytes(count) == 2 * count.total  # ~15 GiB in bf16
    nf4 = weight_bytes(count, "bnb-4bit")
    assert nf4 == int(count.linear * NF4_BYTES_PER_PARAM) + 2 * (count.total - count.linear)
    mem = estimate_memory(
        count, batch_size=0, max_batch_size=8, max_response_tokens=48, prompt_tokens=100
    )
    # KV cache: 2 (K and V) x 32 layers x 8 heads x 128 dims x 2 bytes per token
    assert mem.kv_cache_bytes == 2 * 32 * 8 * 128 * 2 * 8 * 148
    # logits_to_keep=1: batch x vocab in bf16 and four float32 copies (issue 20's measure)
    assert mem.logits_bytes == 8 * 128256 * (2 + 16)
    # the base model's log-probs of the 100 default harmless evaluation prompts, float32
    assert mem.kl_reference_bytes == 100 * 128256 * 4
    bigger = estimate_memory(count, batch_size=0, max_batch_size=16)
    assert bigger.runtime_bytes > mem.runtime_bytes
    assert estimate_memory(count, batch_size=4, max_batch_size=64).batch == 4


def test_missing_local_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        count_parameters(str(tmp_path / "nope"))
    assert "does not exist" in err.value.message


def test_unreachable_hub_id_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as err:
        count_parameters("nobody-xyz/not-a-model")
    assert "not-a-model" in err.value.message and "HF_HUB_OFFLINE" in err.value.hint


def test_a_262k_vocabulary_is_costed_for_what_its_passes_hold() -> None:
    """Issue 20: Gemma 3 270M's shape, default batch (64): the logits and their float32 copies
    (18 bytes per batch row and vocabulary entry, as benchmarks/bench_memory.py measures) and
    the base log-probs are in the estimate, next to the weights."""
    count = count_parameters(str(CONFIGS / "gemma3-270m"))
    assert count.total == 268_098_176 and count.vocab_size == 262144
    mem = estimate_memory(count, dtype="bfloat16", batch_size=0, max_batch_size=64)
    assert mem.logits_bytes == 64 * 262144 * 18
    assert mem.kl_reference_bytes == 100 * 262144 * 4
    assert mem.runtime_bytes >= mem.logits_bytes + mem.kl_reference_bytes + mem.kv_cache_bytes


def test_a_cpu_run_that_does_not_fit_the_ram_fails_in_preflight(tmp_path: Path) -> None:
    from heretic.config.settings import Settings
    from heretic.preflight.checklist import run_preflight
    from heretic.preflight.inventory import GIB, GpuInventory

    settings = Settings(model=str(CONFIGS / "gemma3-270m"), output=tmp_path / "out")

    def ram_check(total_gib: float, available_gib: float):  # type: ignore[no-untyped-def]
        inventory = GpuInventory([], int(total_gib * GIB), int(available_gib * GIB))
        report = run_preflight(
            settings,
            inventory=inventory,
            environ={},
            registry=tmp_path / "reg",
            lock_dir=tmp_path / "locks",
        )
        return next(c for c in report.checks if c.name == "RAM (model)")

    assert ram_check(24, 18).status.name == "OK"
    small = ram_check(4, 2.5)
    assert small.status.name == "FAIL"
    assert "KL reference" in small.need and "in CPU RAM" in small.need


def test_heretic_run_on_the_cpu_exits_7_before_loading_what_cannot_fit(tmp_path: Path) -> None:
    """A real `heretic run` of a model far larger than the RAM ends in preflight with exit 7
    and the RAM row, never in the OOM killer (the folder holds config.json only: nothing is
    loaded before the preflight)."""
    import os
    import shutil

    import psutil
    from test_run_cli import run_cli

    if psutil.virtual_memory().total > 120 * 2**30:
        pytest.skip("this machine's RAM holds a 70B model in bf16")
    model = tmp_path / "big"
    model.mkdir()
    shutil.copy(CONFIGS / "llama3-70b" / "config.json", model / "config.json")
    from heretic.demo.data import demo_prompts

    prompts = []
    for key in ("harmful", "harmless", "harmful_eval", "harmless_eval"):
        path = tmp_path / f"{key}.txt"
        path.write_text("\n".join(getattr(demo_prompts(), key)) + "\n", encoding="utf-8")
        prompts += [f"--{key.replace('_', '-')}-prompts", str(path)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERETIC_")}
    env.update(HF_HUB_OFFLINE="1", HERETIC_CACHE=str(tmp_path / "cache"))
    out = tmp_path / "out"
    result = run_cli(["run", "--model", str(model), "--output", str(out), *prompts], env)
    assert result.returncode == 7, result.stderr[-2000:]
    text = result.stdout + result.stderr
    assert "RAM (model)" in text and "FAIL" in text
    assert not (tmp_path / "out" / "report.json").exists()
