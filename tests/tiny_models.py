"""Tiny random-weight models of real architectures, built locally (no download)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
ARCHITECTURES = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {},
    "qwen3": {"head_dim": 8},
    "gemma2": {"head_dim": 8, "query_pre_attn_scalar": 8},
    "gemma3_text": {"head_dim": 8, "query_pre_attn_scalar": 8},
    "phi3": {"pad_token_id": 0},
}


def tiny_model(model_type: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, **COMMON, **ARCHITECTURES[model_type])
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init gives tiny weights; bigger ones make hook/fold differences visible if any.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


def assert_hooked_equals_folded(
    model: torch.nn.Module,
    arch: Any,
    directions: Any,
    params_list: Sequence[Any],
    variant: str,
    ids: torch.Tensor,
) -> None:
    """For every parameter set: the hooked edit changes the output, clearing it leaves no trace
    (O(1) reset), and the same edit folded into a copy's weights gives the hooked output."""
    from heretic.config.settings import Settings
    from heretic.engine.ablation import Ablator
    from heretic.engine.export import fold

    with torch.no_grad():
        base = model(ids).logits
    for params in params_list:
        ablator = Ablator(arch, directions, variant).install()
        with torch.no_grad(), ablator.applied(params):
            hooked = model(ids).logits
        with torch.no_grad():
            reset = model(ids).logits
        ablator.remove()
        folded_model = copy.deepcopy(model)
        fold(folded_model, directions, params, Settings(ablation=variant))
        with torch.no_grad():
            folded = folded_model(ids).logits
        assert not torch.allclose(hooked, base, atol=1e-3), "the edit must change the output"
        torch.testing.assert_close(reset, base)  # O(1) reset: clearing leaves no trace
        torch.testing.assert_close(folded, hooked, rtol=1e-4, atol=1e-4)
