"""Parameter count and memory estimate of a model from its config.json alone.

Guaranteed: no weight is downloaded. The count instantiates the architecture on the meta
device (`with torch.device("meta")` + AutoModelForCausalLM.from_config), so it is the exact
count transformers would load (tied embeddings counted once). config.json comes from a local
folder, or from the Hub cache / a download of that one file when online.

Estimates, not measurements: runtime memory assumes SDPA attention (no T x T score matrix), a
prompt of `prompt_tokens` tokens, and the largest batch the settings allow. NF4 is costed as
bitsandbytes' default layout (4 bits + one fp32 absmax per 64 weights = 0.5625 bytes/param on
linear layers; embeddings, lm_head, norms and biases stay 16-bit). bitsandbytes quantizes
nn.Linear layers only, so the fused 3-D expert tensors of mixture-of-experts models (most of
their weights) stay 16-bit in a "4-bit" run, and are costed so.

Mixture-of-experts models: memory comes from the total count (every expert is loaded); the
active count (total minus the experts a token does not use: k of E per MoE layer) is what one
token computes with. A decode step of a batch reads every expert that any of its tokens routes
to, so `read_per_step(tokens)` (the parameters a step reads) grows from the active count at one
token towards the total at large batches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from heretic.errors import ModelNotFoundError, UnsupportedArchitectureError
from heretic.jsontypes import JsonDict

if TYPE_CHECKING:  # imported when used: this module must import fast
    from torch import nn
    from transformers import PreTrainedConfig, PreTrainedModel

    from heretic.config.settings import Settings

DEFAULT_PROMPT_TOKENS = 256
DEFAULT_KL_PROMPTS = 100  # the default harmless evaluation set (search and verification parts)
LOGITS_FLOAT32_COPIES = 4  # float32 batch x vocab tensors the KL pass holds at its peak
NF4_BYTES_PER_PARAM = 0.5 + 4 / 64
INT8_BYTES_PER_PARAM = 1.02


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # input embeddings
    lm_head: int  # output embeddings when not tied to the input ones, else 0
    linear: int  # weights of nn.Linear layers a quantizer would convert (lm_head excluded)
    largest_linear: int  # biggest single quantizable weight (dequantized transiently)
    largest_block: int  # biggest unit a device map cannot split: a layer, embeddings or lm_head
    num_layers: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    num_kv_heads: int
    head_dim: int
    model_type: str
    expert: int = 0  # parameters in fused expert tensors (gate_up, down, their biases)
    num_experts: int = 0  # routed experts per MoE layer (E)
    experts_per_token: int = 0  # experts each token is routed to (k)
    moe_layers: int = 0  # decoder layers with fused experts
    # component -> why heretic cannot edit it in this architecture (empty when it can)
    unsupported: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> int:
        """Parameters one token computes with: the inactive experts' share left out."""
        if not self.expert or not self.num_experts:
            return self.total
        unused = self.expert * (self.num_experts - self.experts_per_token) / self.num_experts
        return self.total - int(unused)

    def read_per_step(self, tokens: int) -> int:
        """Parameters a forward step over `tokens` tokens reads, in expectation over uniform
        routing: an expert is skipped only when no token picks it, (1 - k/E)^tokens."""
        if not self.expert or not self.num_experts:
            return self.total
        skipped = (1 - self.experts_per_token / self.num_experts) ** max(1, tokens)
        return self.total - int(self.expert * skipped)

    @property
    def other(self) -> int:
        """Norms, biases and anything else that stays in 16 bit when quantized."""
        return self.total - self.embedding - self.lm_head - self.linear

    def to_dict(self) -> JsonDict:
        return {**asdict(self), "active": self.active}


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", "./", "../", "~")) or Path(model).expanduser().exists()


def _config_dir(model: str, revision: str | None) -> Path:
    """Folder holding config.json for a local model or a Hub id (one small file fetched)."""
    if _looks_like_path(model):
        path = Path(model).expanduser()
        if path.is_file() and path.name == "config.json":
            return path.parent
        if (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(
            f"Model path {model} has no config.json"
            + ("." if path.exists() else " (the path does not exist)."),
            "Point --model at a folder saved with save_pretrained, or at a Hub id.",
        )
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(model, "config.json", revision=revision)).parent
    except Exception as exc:  # the hub raises many types: offline, 404, gated, network
        raise ModelNotFoundError(
            f"Cannot get config.json of '{model}' from the Hugging Face Hub or its local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}).",
            "Check the model id and revision, your network, and HF_TOKEN for gated models; "
            "offline (HF_HUB_OFFLINE=1) the model must already be in the cache.",
        ) from exc


def _load_config(model: str, revision: str | None, trust_remote_code: bool) -> PreTrainedConfig:
    from transformers import AutoConfig

    folder = _config_dir(model, revision)
    try:
        config: PreTrainedConfig = AutoConfig.from_pretrained(
            folder, trust_remote_code=trust_remote_code
        )
        return config
    except (ValueError, KeyError, OSError) as exc:
        raise UnsupportedArchitectureError(
            f"The config.json of '{model}' is not one transformers can read: {exc}.",
            "Update transformers, or pass --trust-remote-code for models that ship their code.",
        ) from exc


def _meta_model(config: PreTrainedConfig, trust_remote_code: bool) -> PreTrainedModel:
    # torch's meta device rather than accelerate's init_empty_weights: with transformers 5 the
    # latter leaves tied embeddings untied and counts them twice.
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            model: PreTrainedModel = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]  # unannotated in transformers
                config, trust_remote_code=trust_remote_code
            )
            return model
    except (ValueError, KeyError, ImportError) as exc:
        raise UnsupportedArchitectureError(
            f"transformers cannot build a causal LM from this config "
            f"(model_type {getattr(config, 'model_type', '?')}): {exc}.",
            "heretic supports decoder-only chat models that AutoModelForCausalLM can load.",
        ) from exc


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _linear_counts(model: PreTrainedModel, lm_head: nn.Module | None) -> tuple[int, int]:
    import torch

    total = largest = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not lm_head:
            n = module.weight.numel()
            total += n
            largest = max(largest, n)
    return total, largest


def _expert_counts(model: PreTrainedModel, text: PreTrainedConfig) -> tuple[int, int, int]:
    """(parameters in fused expert tensors, experts per layer, experts per token)."""
    from heretic.engine.architecture import fused_experts, hidden_size

    hidden = hidden_size(model)
    total = experts = 0
    for module in model.modules():
        layout = fused_experts(module, hidden)
        if layout is not None:
            total += _numel(module)
            experts = max(experts, layout.num_experts)
    per_token = int(getattr(text, "num_experts_per_tok", 0) or 0)
    if total and not per_token:
        per_token = experts  # unknown routing: count every expert as active (errs slow)
    return total, experts, min(per_token, experts)


def _structure(model: PreTrainedModel) -> tuple[int, dict[str, str]]:
    """(MoE layer count, component -> why it cannot be edited), from the module tree alone."""
    from heretic.engine.architecture import describe
    from heretic.errors import HereticError

    unsupported: dict[str, str] = {}
    moe_layers = 0
    for component in ("attention", "mlp"):
        try:
            arch = describe(model, [component])
        except HereticError as exc:
            unsupported[component] = exc.message
            continue
        except Exception:  # noqa: BLE001 - a model the finder trips on: the run will say why
            continue
        if component == "mlp":
            moe_layers = len(arch.moe_layers)
    return moe_layers, unsupported


def _largest_layer(model: PreTrainedModel, num_layers: int) -> int:
    import torch

    best = 0
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            best = max(best, max((_numel(layer) for layer in module), default=0))
    return best


def count_from_config(config: PreTrainedConfig, trust_remote_code: bool = False) -> ParamCount:
    """ParamCount of a transformers config, built on the meta device."""
    from heretic.engine.architecture import tensor_attr

    model = _meta_model(config, trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    total = _numel(model)
    embed = model.get_input_embeddings()
    head: nn.Module | None = model.get_output_embeddings()  # type: ignore[no-untyped-call]  # unannotated in transformers
    embedding = tensor_attr(embed, "weight").numel() if embed is not None else 0
    tied = head is not None and embed is not None and head.weight is embed.weight
    lm_head = tensor_attr(head, "weight").numel() if head is not None and not tied else 0
    linear, largest_linear = _linear_counts(model, head)
    layers = int(getattr(text, "num_hidden_layers", 0) or 0)
    heads = int(getattr(text, "num_attention_heads", 1) or 1)
    hidden = int(getattr(text, "hidden_size", 0) or 0)
    head_dim = int(getattr(text, "head_dim", 0) or 0) or (hidden // heads if heads else 0)
    expert, num_experts, per_token = _expert_counts(model, text)
    moe_layers, unsupported = _structure(model)
    return ParamCount(
        total=total,
        embedding=embedding,
        lm_head=lm_head,
        linear=linear,
        largest_linear=largest_linear,
        largest_block=max(_largest_layer(model, layers), embedding, lm_head),
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=int(getattr(text, "intermediate_size", 0) or 4 * hidden),
        vocab_size=int(getattr(text, "vocab_size", 0) or embedding // max(hidden, 1)),
        num_kv_heads=int(getattr(text, "num_key_value_heads", 0) or heads),
        head_dim=head_dim,
        model_type=str(getattr(config, "model_type", "")),
        expert=expert,
        num_experts=num_experts,
        experts_per_token=per_token,
        moe_layers=moe_layers,
        unsupported=unsupported,
    )


def count_parameters(
    model: str, revision: str | None = None, trust_remote_code: bool = False
) -> ParamCount:
    """Exact parameter count of `model` (local folder or Hub id) from its config.json only."""
    config = _load_config(model, revision, trust_remote_code)
    return count_from_config(config, trust_remote_code)


def dtype_bytes(dtype: str) -> int:
    """Bytes per parameter of a 16/32-bit dtype name; auto means the usual bf16 checkpoint."""
    return 4 if dtype.strip().lower() in ("float32", "fp32", "float") else 2


def weight_bytes(count: ParamCount, quantization: str = "none", dtype: str = "auto") -> int:
    """Bytes of the loaded weights: bnb quantizes linear weights; the rest stays 16-bit."""
    width = dtype_bytes(dtype)
    if quantization == "none":
        return count.total * width
    per_linear = NF4_BYTES_PER_PARAM if quantization == "bnb-4bit" else INT8_BYTES_PER_PARAM
    return int(count.linear * per_linear) + (count.total - count.linear) * 2


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int  # generation cache at batch x (prompt + response) tokens
    activation_bytes: int  # one layer's transient tensors in the longest prefill pass
    logits_bytes: int  # batch (or answer) x vocab logits and their float32 copies (see below)
    dequant_bytes: int  # one dequantized linear weight (quantized runs only)
    batch: int
    tokens: int
    bf16_weights_bytes: int
    nf4_weights_bytes: int
    largest_block_bytes: int
    kl_reference_bytes: int = 0  # the base model's float32 log-probs, kept for the whole run

    @property
    def runtime_bytes(self) -> int:
        return (
            self.kv_cache_bytes
            + self.activation_bytes
            + self.logits_bytes
            + self.dequant_bytes
            + self.kl_reference_bytes
        )

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.runtime_bytes

    def to_dict(self) -> dict[str, int]:
        return {
            **asdict(self),
            "runtime_bytes": self.runtime_bytes,
            "total_bytes": self.total_bytes,
        }


def estimate_memory(
    count: ParamCount,
    *,
    quantization: str = "none",
    dtype: str = "auto",
    batch_size: int = 0,
    max_batch_size: int = 64,
    max_response_tokens: int = 48,
    prompt_tokens: int = DEFAULT_PROMPT_TOKENS,
    kl_prompts: int = DEFAULT_KL_PROMPTS,
    damage_tokens: int = 0,
) -> MemoryEstimate:
    """Peak memory of a run: weights plus the largest evaluation batch's transient memory.

    batch_size 0 (automatic) is costed at max_batch_size, the most the search may try.
    Per batch and vocabulary entry the KL pass holds the 16-bit logits and four float32
    tensors at once (the upcast, the log-softmax, the base's exp and the difference:
    `benchmarks/bench_memory.py` measures 18 bytes in bf16 on vocabularies of 32k to 262k);
    generation's float32 copy of the last logits is less. The base model's log-probs of the
    `kl_prompts` harmless prompts stay for the whole run (search and verification together).
    The answer damage (damage_tokens > 0) feeds prompt + answer through the model at once
    (the longest prefill) and applies the head one answer at a time: damage_tokens x vocab
    logits with the same copies, besides the forward's own last-position logits.
    """
    act = 4 if dtype_bytes(dtype) == 4 and quantization == "none" else 2
    batch = batch_size or max_batch_size
    tokens = prompt_tokens + max_response_tokens
    kv = 2 * count.num_layers * count.num_kv_heads * count.head_dim * act * batch * tokens
    # residual stream copies (~4 x hidden) and the MLP's gate, up and product (3 x intermediate)
    prefill = prompt_tokens + damage_tokens
    activations = batch * prefill * (4 * count.hidden_size + 3 * count.intermediate_size) * act
    rows = max(batch, damage_tokens)
    logits = rows * count.vocab_size * (act + LOGITS_FLOAT32_COPIES * 4)
    dequant = count.largest_linear * 2 if quantization != "none" else 0
    weights = weight_bytes(count, quantization, dtype)
    return MemoryEstimate(
        weights_bytes=weights,
        kv_cache_bytes=kv,
        activation_bytes=activations,
        logits_bytes=logits,
        dequant_bytes=dequant,
        batch=batch,
        tokens=tokens,
        bf16_weights_bytes=weight_bytes(count, "none", "bfloat16"),
        nf4_weights_bytes=weight_bytes(count, "bnb-4bit"),
        # a quantized run keeps embeddings and lm_head (often the largest block) in 16 bit
        largest_block_bytes=count.largest_block * (2 if quantization != "none" else act),
        kl_reference_bytes=kl_prompts * count.vocab_size * 4,
    )


def estimate_for_settings(count: ParamCount, settings: Settings) -> MemoryEstimate:
    """estimate_memory with the batch, dtype and quantization of a Settings-like object."""
    return estimate_memory(
        count,
        quantization=str(getattr(settings, "quantization", "none")),
        dtype=str(getattr(settings, "dtype", "auto")),
        batch_size=int(getattr(settings, "batch_size", 0)),
        max_batch_size=int(getattr(settings, "max_batch_size", 64)),
        max_response_tokens=int(getattr(settings, "max_response_tokens", 48)),
        damage_tokens=_damage_tokens(settings),
    )


def _damage_tokens(settings: Settings) -> int:
    if str(getattr(settings, "damage_metric", "answer")) != "answer":
        return 0
    return int(getattr(settings, "damage_tokens", 0))
