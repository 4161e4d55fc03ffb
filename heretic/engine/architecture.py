"""Finds, in any decoder-only transformers model, the decoder layers and the modules that write
to the residual stream, from the module tree rather than from lists of names.

For each decoder layer:
- a child whose forward takes an attention mask or position embeddings (or whose name says
  attention) is a token mixer (attention; hybrid models' state-space mixers too); its writer
  is its last linear layer that outputs the hidden size (o_proj, out_proj, dense, ...), and
  a layer with parallel mixers (Falcon-H1) has one writer per mixer;
- a child holding fused expert tensors (transformers 5: a module with a 3-D `down_proj`
  parameter) is a mixture-of-experts block; its writers are the fused experts module (whose
  output is the routing-weighted sum of every expert's down projection) and the last linear
  layer of every other MLP inside it (shared experts). Routers output the expert count, not the
  hidden size, and are left alone;
- any other child with weights (norms aside) is a dense MLP; its writer is its last linear layer
  that outputs the hidden size (down_proj, fc2, w2, ...). A ModuleList of per-expert MLPs
  (older MoE layouts) yields one writer per expert.
Dense and MoE layers may be mixed in one model (DeepSeek-style dense first layers).

Guarantee: either every layer yields its writers for every requested component, or
`UnsupportedArchitectureError` names the model type, the layer and the module not understood.
A partial edit (some layers or components silently skipped) is never returned.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from heretic.errors import UnsupportedArchitectureError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Forward arguments only an attention block takes.
_ATTENTION_ARGS = {
    "attention_mask",
    "position_embeddings",
    "past_key_values",
    "past_key_value",
    "cache",
    "position_ids",
    "layer_past",
}

# What a residual writer or a decoder layer returns: the hidden states, or a tuple whose first
# item they are (attention weights, caches or router logits after them).
ModuleOutput = torch.Tensor | tuple[torch.Tensor, *tuple[object, ...]]


def tensor_attr(module: nn.Module, name: str) -> torch.Tensor:
    """`module.<name>`, a parameter or buffer. nn.Module's attribute lookup is typed as "tensor
    or submodule"; a submodule (or anything else) here raises AttributeError, as a missing
    tensor attribute does."""
    value: object = getattr(module, name)
    if not isinstance(value, torch.Tensor):
        raise AttributeError(
            f"'{type(module).__name__}.{name}' is a {type(value).__name__}, not a tensor"
        )
    return value


@dataclass(frozen=True)
class FusedExperts:
    """A fused experts module: `down_proj` (E, H, I), or (E, I, H) when `transposed` (the forward
    computes x @ down_proj[e]); `down_proj_bias` (E, H) where the architecture has one."""

    module: nn.Module
    transposed: bool

    @property
    def down(self) -> torch.Tensor:
        return tensor_attr(self.module, "down_proj")

    @property
    def bias(self) -> nn.Parameter | None:
        return getattr(self.module, "down_proj_bias", None)

    @property
    def num_experts(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True)
class LayerModules:
    index: int
    layer: nn.Module
    # component -> its main writer (the linear layer of a dense block, the fused experts of an
    # MoE block); `parts` holds every writer of the component, the main one first.
    writers: dict[str, nn.Module]
    parts: dict[str, tuple[nn.Module, ...]] = field(default_factory=dict)
    experts: dict[int, FusedExperts] = field(default_factory=dict)  # id(module) -> layout

    def all_writers(self, component: str) -> tuple[nn.Module, ...]:
        return self.parts.get(component) or (self.writers[component],)

    @property
    def is_moe(self) -> bool:
        return bool(self.experts)


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers: list[LayerModules]
    embed: nn.Module

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def moe_layers(self) -> list[int]:
        return [entry.index for entry in self.layers if entry.is_moe]


def find_decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
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
            "Phi-3, their MoE variants and kin); open an issue with the model id.",
        )
    # The shortest path is the main stack (vision towers etc. sit deeper or elsewhere).
    return min(candidates, key=lambda item: item[0].count("."))[1]


def hidden_size(model: PreTrainedModel) -> int:
    embed = model.get_input_embeddings()
    weight = getattr(embed, "weight", None)
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[-1])
    return int(model.config.hidden_size)


def fused_experts(module: nn.Module, hidden: int) -> FusedExperts | None:
    """The layout of `module` if it holds fused expert tensors, else None."""
    down = module._parameters.get("down_proj")
    if not isinstance(down, torch.Tensor) or down.dim() != 3:
        return None
    declared = getattr(module, "is_transposed", None)  # set by transformers' experts decorator
    if isinstance(declared, bool):
        transposed = declared
    elif down.shape[1] == hidden and down.shape[2] != hidden:
        transposed = False
    elif down.shape[2] == hidden and down.shape[1] != hidden:
        transposed = True
    else:
        return None  # ambiguous: the caller reports the module as not understood
    out_dim = 2 if transposed else 1
    return FusedExperts(module, transposed) if down.shape[out_dim] == hidden else None


def _is_norm(module: nn.Module) -> bool:
    params = list(module.parameters(recurse=True))
    return not list(module.children()) and all(p.dim() <= 1 for p in params)


def _is_attention(name: str, module: nn.Module) -> bool:
    if "attn" in name.lower() or "attention" in name.lower():
        return True
    try:
        args = set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return False
    return bool(args & _ATTENTION_ARGS)


def _last_linear_to(module: nn.Module, hidden: int) -> nn.Linear | None:
    """The last-registered linear child (direct) that outputs the hidden size."""
    found = None
    for child in module.children():
        if isinstance(child, nn.Linear) and child.out_features == hidden:
            found = child
    return found


def _ffn_writers(module: nn.Module, hidden: int) -> tuple[list[nn.Module], list[FusedExperts]]:
    """Writers of a feed-forward block: fused experts, and the last hidden-size linear of every
    MLP inside it (the block itself when it is a plain MLP)."""
    layout = fused_experts(module, hidden)
    if layout is not None:
        return [module], [layout]
    writers: list[nn.Module] = []
    layouts: list[FusedExperts] = []
    own = _last_linear_to(module, hidden)
    for child in module.children():
        if isinstance(child, nn.Linear) or _is_norm(child):
            continue
        sub, sub_layouts = _ffn_writers(child, hidden)
        writers += sub
        layouts += sub_layouts
    if own is not None:
        writers.append(own)
    # The fused experts first: they are the block's main writer.
    writers.sort(key=lambda m: not any(lay.module is m for lay in layouts))
    return writers, layouts


def _not_understood(
    model_type: str, index: int, component: str, detail: str
) -> UnsupportedArchitectureError:
    return UnsupportedArchitectureError(
        f"Model type '{model_type}': layer {index} has no {component} output module that "
        f"heretic understands: {detail}.",
        "This architecture is not supported yet; open an issue with the model id, or restrict "
        "the edit (--set components=attention or components=mlp).",
    )


def _layer_writers(
    layer: nn.Module, hidden: int
) -> tuple[dict[str, list[nn.Module]], list[FusedExperts], list[str]]:
    """component -> writers, fused expert layouts, and the children not understood."""
    found: dict[str, list[nn.Module]] = {"attention": [], "mlp": []}
    layouts: list[FusedExperts] = []
    odd: list[str] = []
    for name, child in layer.named_children():
        if _is_norm(child) or not list(child.parameters()):
            continue
        if isinstance(child, nn.Linear):
            odd.append(f"'{name}' ({type(child).__name__})")
        elif _is_attention(name, child):
            writer = _last_linear_to(child, hidden)
            if writer is None:
                odd.append(f"'{name}' ({type(child).__name__}, no linear output of size {hidden})")
            else:
                found["attention"].append(writer)
        else:
            writers, sub = _ffn_writers(child, hidden)
            if not writers:
                odd.append(
                    f"'{name}' ({type(child).__name__}: no linear output of size {hidden} "
                    "and no fused expert tensors)"
                )
            found["mlp"] += writers
            layouts += sub
    return found, layouts, odd


def describe(model: PreTrainedModel, components: list[str]) -> Architecture:
    model_type = str(getattr(model.config, "model_type", type(model).__name__))
    hidden = hidden_size(model)
    layers = find_decoder_layers(model)
    found: list[LayerModules] = []
    for index, layer in enumerate(layers):
        writers, layouts, odd = _layer_writers(layer, hidden)
        for component in components:
            if not writers[component]:
                detail = ("module " + ", ".join(odd)) if odd else "no such module in the layer"
                raise _not_understood(model_type, index, component, detail)
        for layout in layouts:
            if getattr(layout.module, "has_post_expert_norm", False):
                raise _not_understood(
                    model_type,
                    index,
                    "mlp",
                    f"{type(layout.module).__name__} normalizes each expert's output after its "
                    "down projection, so an edit of the down projection cannot be folded exactly",
                )
        found.append(
            LayerModules(
                index=index,
                layer=layer,
                writers={c: writers[c][0] for c in components},
                parts={c: tuple(writers[c]) for c in components},
                experts={id(lay.module): lay for lay in layouts} if "mlp" in components else {},
            )
        )
    return Architecture(model_type=model_type, layers=found, embed=model.get_input_embeddings())
