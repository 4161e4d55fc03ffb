"""A small mixture-of-experts chat model for the MoE benchmark, made from the demo model the way
MoE models are often started ("sparse upcycling"), then trained on the CPU on the demo's own
conversations (same prompts, tokenizer, chat template and training loop as the demo model).

Architecture: Qwen2-MoE in miniature with the layouts heretic must handle in one model: a dense
first layer (`mlp_only_layers`), then MoE layers with 4 fused experts (2 routed per token) and a
gated shared expert. Upcycling: attention, norms and embeddings are the demo model's; every
expert starts as the demo model's MLP of its layer plus noise (with normalized top-2 routing the
routed sum then equals the dense MLP), the shared expert's down projection starts at zero; the
fine-tuning then trains experts, router and shared expert apart. Starting from the trained demo
model keeps the CPU training to a few dozen steps. Cached like the demo model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
)

from heretic.demo.model import (
    build_tokenizer,
    cache_root,
    ensure_demo_model,
    ensure_trained,
    fit_and_save,
)
from heretic.progress import Reporter

MOE_VERSION = "1"
EXPERTS = 4


def moe_model_dir() -> Path:
    return cache_root() / f"demo-moe-model-v{MOE_VERSION}"


def build_moe_config(tokenizer: PreTrainedTokenizerFast, dense: LlamaConfig) -> Qwen2MoeConfig:
    """The MoE config matching the dense demo model's shapes (`dense`: its config)."""
    rope = dense.rope_parameters
    if rope is None:  # dict(None) would raise the same TypeError
        raise TypeError("The dense demo model's config has no rope_parameters.")
    return Qwen2MoeConfig(
        vocab_size=len(tokenizer),
        hidden_size=dense.hidden_size,
        intermediate_size=dense.intermediate_size,
        moe_intermediate_size=dense.intermediate_size,
        shared_expert_intermediate_size=dense.intermediate_size // 2,
        num_experts=EXPERTS,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        mlp_only_layers=[0],
        decoder_sparse_step=1,
        qkv_bias=False,
        num_hidden_layers=dense.num_hidden_layers,
        num_attention_heads=dense.num_attention_heads,
        num_key_value_heads=dense.num_key_value_heads,
        max_position_embeddings=dense.max_position_embeddings,
        rope_parameters=dict(rope),
        rms_norm_eps=dense.rms_norm_eps,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@torch.no_grad()
def upcycle(dense: LlamaForCausalLM, moe: Qwen2MoeForCausalLM, noise: float = 0.1) -> None:
    """Copy the dense model into the MoE model; experts start as the dense MLP plus noise."""
    state = moe.state_dict()
    for name, value in dense.state_dict().items():
        if name in state:
            state[name].copy_(value)
    for index, layer in enumerate(moe.model.layers):
        if index == 0:
            continue  # the dense first layer was copied by name above
        mlp = dense.model.layers[index].mlp
        gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight], dim=0)
        experts = layer.mlp.experts
        for e in range(experts.gate_up_proj.shape[0]):
            experts.gate_up_proj[e].copy_(gate_up * (1 + noise * torch.randn_like(gate_up)))
            down = mlp.down_proj.weight
            experts.down_proj[e].copy_(down * (1 + noise * torch.randn_like(down)))
        layer.mlp.shared_expert.down_proj.weight.zero_()


def train_moe_model(
    output_dir: Path, *, steps: int = 60, seed: int = 0, reporter: Reporter | None = None
) -> None:
    torch.manual_seed(seed)
    tokenizer = build_tokenizer()
    dense = AutoModelForCausalLM.from_pretrained(ensure_demo_model(reporter), dtype=torch.float32)
    if not isinstance(dense, LlamaForCausalLM):  # the demo model is built as one (demo.model)
        raise TypeError(f"The demo model loaded as {type(dense).__name__}, not LlamaForCausalLM.")
    model = Qwen2MoeForCausalLM(build_moe_config(tokenizer, dense.config))
    upcycle(dense, model)
    fit_and_save(
        model,
        tokenizer,
        output_dir,
        steps=steps,
        seed=seed,
        reporter=reporter,
        label="the MoE demo model",
        marker={"moe_version": MOE_VERSION},
        lr=1e-3,
    )


def ensure_moe_model(reporter: Reporter | None = None) -> Path:
    """Path of the cached MoE demo model, made and trained first if needed."""
    return ensure_trained(moe_model_dir(), train_moe_model, "the MoE demo model", reporter)
