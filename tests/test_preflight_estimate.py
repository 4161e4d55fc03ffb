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
    assert mem.logits_bytes == 8 * 128256 * (2 + 8)  # logits_to_keep=1: batch x vocab
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
