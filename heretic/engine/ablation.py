"""Directional ablation applied to module OUTPUTS with forward hooks, and the identical edit
folded into weights for export.

For a module y = W x (+ b) with W: (out, in), an orthonormal basis V: (k, out) and strength lam:
- standard:          y' = y - lam V^T (V y)                       i.e. W' = (I - lam V^T V) W
- norm-preserving:   u = y / n,  y' = c * (u - lam V^T (V u))     with n_j = ||W_j||, and
  c_j = n_j / s_j where s_j = ||What_j - lam (V^T A)_j||, What = W / n (rows), A = V What.
  s_j^2 = 1 - 2 lam <V_:j, B_j> + lam^2 V_:j^T G V_:j, B = What A^T (out, k), G = A A^T (k, k),
  so every row of W' = M W keeps its norm exactly; two mat-mults with W per module, no SVD.

The hooks never modify or copy weights: a trial only swaps small per-module tensors (O(1)
reset), which works for 4-bit weights and for models split across devices.

Mixture-of-experts blocks: the fused experts module outputs sum_e g_e(x) (W_e h_e + b_e), and the
routing weights g_e are scalars, so editing that output with M = I - lam V^T V equals editing
every expert: the fold is down_proj[e] <- M down_proj[e] (b_e <- M b_e) for every expert, and the
router is untouched. Shared experts are linear writers of their own. The norm-preserving variant
scales each expert's rows by that expert's own c, which no edit of the summed output can apply,
so it is refused for MoE layers rather than approximated (see `check_variant`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from heretic.engine.architecture import Architecture, FusedExperts, ModuleOutput
from heretic.engine.directions import Directions
from heretic.engine.parameters import AblationParams, layer_bases
from heretic.errors import ConfigError

Variant = Literal["standard", "norm-preserving"]


def check_variant(arch: Architecture, variant: str) -> None:
    """Refuse norm-preserving ablation where it cannot be exact (MoE layers' fused experts)."""
    if variant != "norm-preserving" or not arch.moe_layers:
        return
    layers = arch.moe_layers
    raise ConfigError(
        f"--ablation norm-preserving cannot be applied exactly to the mixture-of-experts layers "
        f"of this '{arch.model_type}' model ({len(layers)} of {arch.num_layers} layers): it "
        "rescales every expert's rows by that expert's own factor, and the search edits the "
        "routed sum of the experts' outputs, so the searched and the exported model would differ.",
        "Use --ablation standard (exact on MoE models: it removes the direction from every "
        "expert), or keep norm-preserving for attention only with --set components=attention.",
    )


def dense_weight(module: nn.Linear) -> torch.Tensor:
    """The module's weight as float32 (out, in), dequantizing bitsandbytes weights."""
    weight = module.weight
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:
        import bitsandbytes.functional as bnbf

        dequantized: torch.Tensor = bnbf.dequantize_4bit(weight.data, quant_state)
        return dequantized.float()
    scb: torch.Tensor | None = getattr(weight, "SCB", None) if weight.dtype == torch.int8 else None
    if scb is not None:
        return weight.data.float() * (scb.float()[:, None] / 127.0)
    return weight.detach().float()


@dataclass
class EditState:
    """What one module needs during a trial; lam == 0 means the hook does nothing."""

    lam: float = 0.0
    basis: torch.Tensor | None = None  # (k, out) float32 on the module's device
    inv_norm: torch.Tensor | None = None  # (out,) 1/n, norm-preserving only
    scale: torch.Tensor | None = None  # (out,) c = n/s, norm-preserving only


def norm_preserving_terms(
    weight: torch.Tensor, basis: torch.Tensor, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/n, c) for a float32 weight (out, in) and basis (k, out)."""
    norms = weight.norm(dim=1).clamp_min(1e-12)
    what = weight / norms[:, None]
    a = basis @ what  # (k, in)
    b = what @ a.T  # (out, k)
    g = a @ a.T  # (k, k)
    s2 = 1 - 2 * lam * (basis.T * b).sum(1) + lam**2 * ((basis.T @ g) * basis.T).sum(1)
    s = s2.clamp_min(1e-12).sqrt()
    return 1.0 / norms, norms / s


def edit_output(y: torch.Tensor, state: EditState) -> torch.Tensor:
    basis = state.basis
    assert basis is not None
    u = y.float()
    if state.inv_norm is not None:
        u = u * state.inv_norm
    u = u - state.lam * (u @ basis.T) @ basis
    if state.scale is not None:
        u = u * state.scale
    return u.to(y.dtype)


def fold_into_linear(module: nn.Linear, state: EditState) -> None:
    """W <- M W and b <- M b, where M is the same affine map the hook applies."""
    if state.lam == 0.0 or state.basis is None:
        return
    weight = module.weight.detach().float()
    basis = state.basis.to(weight.device)
    new = weight
    if state.inv_norm is not None:
        new = new * state.inv_norm.to(weight.device)[:, None]
    new = new - state.lam * basis.T @ (basis @ new)
    if state.scale is not None:
        new = new * state.scale.to(weight.device)[:, None]
    module.weight.data.copy_(new.to(module.weight.dtype))
    if module.bias is not None:
        module.bias.data.copy_(
            edit_output(module.bias.detach()[None], _on(state, weight.device))[0]
        )


def fold_into_experts(experts: FusedExperts, state: EditState) -> None:
    """down_proj[e] <- M down_proj[e] and b_e <- M b_e for every expert (standard variant only)."""
    if state.lam == 0.0 or state.basis is None:
        return
    if state.inv_norm is not None or state.scale is not None:
        raise ValueError("norm-preserving edits are not defined for fused experts")
    down = experts.down
    basis = state.basis.to(down.device)
    # One expert at a time: a float32 copy of all experts of a large MoE layer (DeepSeek-V3:
    # 256 x 7168 x 2048) would need tens of GB; one expert is a few MB.
    for e in range(down.shape[0]):
        weight = down[e].detach().float()
        # (E, H, I): the output is dim 0 of W_e, M W_e = W_e - lam V^T (V W_e); (E, I, H): W_e M^T.
        if experts.transposed:
            new = weight - state.lam * (weight @ basis.T) @ basis
        else:
            new = weight - state.lam * basis.T @ (basis @ weight)
        down.data[e].copy_(new.to(down.dtype))
    bias = experts.bias
    if bias is not None:
        bias.data.copy_(edit_output(bias.detach(), _on(state, bias.device)))


def _on(state: EditState, device: torch.device) -> EditState:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.to(device)

    return EditState(state.lam, move(state.basis), move(state.inv_norm), move(state.scale))


def _as_linear(module: nn.Module) -> nn.Linear:
    """A writer that is not fused experts: `describe` only finds nn.Linear ones (bitsandbytes'
    layers included), so the TypeError is a broken invariant, not a model to support."""
    if not isinstance(module, nn.Linear):
        raise TypeError(
            f"residual writer {type(module).__name__} is neither nn.Linear nor fused experts"
        )
    return module


class Ablator:
    """Owns the hooks on every residual writer; `apply(params)` switches the edit in O(modules)."""

    def __init__(self, arch: Architecture, directions: Directions, variant: Variant) -> None:
        self.arch = arch
        self.directions = directions
        self.variant = variant
        check_variant(arch, variant)
        self.states: dict[tuple[int, str, int], EditState] = {}
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def modules(self) -> Iterator[tuple[tuple[int, str, int], nn.Module]]:
        """((layer, component, part), module) for every writer; part 0 is the main writer."""
        for entry in self.arch.layers:
            for component in entry.writers:
                for part, module in enumerate(entry.all_writers(component)):
                    yield (entry.index, component, part), module

    def experts_layout(self, key: tuple[int, str, int], module: nn.Module) -> FusedExperts | None:
        return self.arch.layers[key[0]].experts.get(id(module))

    def install(self) -> Ablator:
        for key, module in self.modules():
            state = self.states.setdefault(key, EditState())

            def hook(
                _module: nn.Module,
                _args: tuple[object, ...],
                output: ModuleOutput,
                state: EditState = state,
            ) -> ModuleOutput | None:
                if state.lam == 0.0:
                    return None
                if isinstance(output, tuple):  # (hidden, extras) from some block types
                    return (edit_output(output[0], state), *output[1:])
                return edit_output(output, state)

            self.handles.append(module.register_forward_hook(hook))
        return self

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def clear(self) -> None:
        for state in self.states.values():
            state.lam = 0.0

    def compute_states(self, params: AblationParams) -> dict[tuple[int, str, int], EditState]:
        bases = layer_bases(self.directions, params, self.arch.num_layers)
        components = self.arch.layers[0].writers if self.arch.layers else {}
        strengths = {c: params.strengths(c, self.arch.num_layers) for c in components}
        states: dict[tuple[int, str, int], EditState] = {}
        for key, module in self.modules():
            layer, component, _ = key
            lam = strengths[component][layer]
            if lam == 0.0:
                states[key] = EditState()
                continue
            device = next(module.parameters()).device
            basis = bases[layer].to(device=device, dtype=torch.float32)
            state = EditState(lam=lam, basis=basis)
            if self.variant == "norm-preserving":
                state.inv_norm, state.scale = norm_preserving_terms(
                    dense_weight(_as_linear(module)), basis, lam
                )
            states[key] = state
        return states

    def fold(self, params: AblationParams) -> None:
        """Write the edit of `params` into the weights (the export; the hooks stay off)."""
        states = self.compute_states(params)
        for key, module in self.modules():
            layout = self.experts_layout(key, module)
            if layout is not None:
                fold_into_experts(layout, states[key])
            else:
                fold_into_linear(_as_linear(module), states[key])

    def apply(self, params: AblationParams) -> None:
        for key, new in self.compute_states(params).items():
            state = self.states.setdefault(key, EditState())
            state.lam, state.basis = new.lam, new.basis
            state.inv_norm, state.scale = new.inv_norm, new.scale

    @contextmanager
    def applied(self, params: AblationParams) -> Iterator[None]:
        self.apply(params)
        try:
            yield
        finally:
            self.clear()
