"""Finds, in any decoder-only transformers model, the decoder layers and the modules that write
to the residual stream: the attention output projection and the MLP down projection.

Guarantee: either every layer yields one module per requested component, or
`UnsupportedArchitectureError` names the model type and what was missing. A partial edit (some
layers or components silently skipped) is never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from heretic.errors import UnsupportedArchitectureError

# Relative paths inside one decoder layer, most common first.
ATTENTION_OUT = (
    "self_attn.o_proj",
    "self_attn.out_proj",
    "self_attn.dense",
    "attention.o_proj",
    "attention.dense",
    "attn.out_proj",
    "attn.o_proj",
    "self_attention.dense",
)
MLP_DOWN = (
    "mlp.down_proj",
    "mlp.fc2",
    "mlp.dense_4h_to_h",
    "feed_forward.w2",
    "feed_forward.down_proj",
    "mlp.w2",
    "ffn.down_proj",
)
COMPONENT_PATHS = {"attention": ATTENTION_OUT, "mlp": MLP_DOWN}


@dataclass(frozen=True)
class LayerModules:
    index: int
    layer: nn.Module
    writers: dict[str, nn.Linear]  # component name -> module whose output joins the residual


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers: list[LayerModules]
    embed: nn.Module

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def _get(module: nn.Module, path: str) -> nn.Module | None:
    for part in path.split("."):
        module = getattr(module, part, None)  # type: ignore[assignment]
        if module is None:
            return None
    return module


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList whose length is the config's layer count (model.model.layers and kin)."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    text_config = getattr(model.config, "text_config", None)
    if n_layers is None and text_config is not None:
        n_layers = getattr(text_config, "num_hidden_layers", None)
    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and n_layers
    ]
    if not candidates:
        raise UnsupportedArchitectureError(
            f"Could not find the decoder layers of model type '{model.config.model_type}'"
            f" (no module list of {n_layers} layers).",
            "heretic supports decoder-only transformers models (Llama, Mistral, Qwen, Gemma, "
            "Phi-3 and kin); open an issue with the model id.",
        )
    # The shortest path is the main stack (vision towers etc. sit deeper or elsewhere).
    return min(candidates, key=lambda item: item[0].count("."))[1]


def _writer(layer: nn.Module, component: str) -> nn.Module | None:
    for path in COMPONENT_PATHS[component]:
        found = _get(layer, path)
        if found is not None:
            return found
    return None


def describe(model: nn.Module, components: list[str]) -> Architecture:
    model_type = str(getattr(model.config, "model_type", type(model).__name__))
    layers = find_decoder_layers(model)
    found: list[LayerModules] = []
    for index, layer in enumerate(layers):
        writers: dict[str, nn.Linear] = {}
        for component in components:
            module = _writer(layer, component)
            if module is None:
                raise UnsupportedArchitectureError(
                    f"Model type '{model_type}': layer {index} has no {component} output module "
                    f"(looked for {', '.join(COMPONENT_PATHS[component])}).",
                    "This architecture is not supported yet (fused MoE experts, for example); "
                    "open an issue with the model id, or restrict --components.",
                )
            if not isinstance(module, nn.Linear):
                raise UnsupportedArchitectureError(
                    f"Model type '{model_type}': layer {index}'s {component} output module is a "
                    f"{type(module).__name__}, not a linear layer, so its edit cannot be folded "
                    "into the weights exactly.",
                    "This architecture is not supported yet; open an issue with the model id.",
                )
            writers[component] = module
        found.append(LayerModules(index=index, layer=layer, writers=writers))
    embed = model.get_input_embeddings()
    return Architecture(model_type=model_type, layers=found, embed=embed)


def hidden_size(model: nn.Module) -> int:
    embed = model.get_input_embeddings()
    weight = getattr(embed, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[-1])
    return int(model.config.hidden_size)
