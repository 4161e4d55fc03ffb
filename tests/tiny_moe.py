"""Tiny random-weight mixture-of-experts models of real architectures, built locally."""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM

COMMON = dict(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
# Few experts, top-2 routing, an intermediate size unlike the hidden size (so a layout mix-up
# between (E, H, I) and (E, I, H) is a shape error, not a silent transpose).
MOE_ARCHITECTURES: dict[str, dict] = {
    "qwen3_moe": {
        "head_dim": 8,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "norm_topk_prob": True,
    },
    "gpt_oss": {
        "head_dim": 8,
        "intermediate_size": 24,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": 16,
    },
    "mixtral": {
        "intermediate_size": 24,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "sliding_window": None,
    },
    # Shared experts and a dense first layer (first_k_dense_replace), like DeepSeek-V3 / GLM-4.5.
    "glm4_moe": {
        "head_dim": 8,
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
    },
    "deepseek_v3": {
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "first_k_dense_replace": 1,
        "n_group": 1,
        "topk_group": 1,
        "kv_lora_rank": 16,
        "q_lora_rank": 16,
        "qk_rope_head_dim": 4,
        "qk_nope_head_dim": 4,
        "v_head_dim": 8,
        "num_key_value_heads": 4,
    },
    # Shared expert behind a sigmoid gate; every other layer dense (decoder_sparse_step 2).
    "qwen2_moe": {
        "intermediate_size": 64,
        "moe_intermediate_size": 24,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "shared_expert_intermediate_size": 40,
        "decoder_sparse_step": 2,
    },
    "olmoe": {"intermediate_size": 24, "num_experts": 4, "num_experts_per_tok": 2},
    "granitemoe": {"intermediate_size": 24, "num_local_experts": 4, "num_experts_per_tok": 2},
}


def tiny_moe_config(model_type: str, **overrides):
    return AutoConfig.for_model(
        model_type, **{**COMMON, **MOE_ARCHITECTURES[model_type], **overrides}
    )


def tiny_moe_model(model_type: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = tiny_moe_config(model_type, **overrides)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)  # big enough that a hook/fold mismatch would show
    return model.eval()
