"""Ablation parameters of one trial: a strength kernel over layers per component, and which
direction each layer removes.

Kernel: strength `max_weight` at (fractional) layer `max_weight_position`, falling linearly to
`min_weight` at distance `min_weight_distance` (in layers), zero beyond it.
Direction: `per-layer` uses each layer's own direction; `global` uses one direction, interpolated
between the two residual positions around `direction_index`, for every layer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from heretic.engine.directions import Directions
from heretic.jsontypes import JsonDict

Scope = Literal["global", "per-layer"]
SCOPES: tuple[Scope, ...] = get_args(Scope)


def parse_scope(value: str) -> Scope:
    """`value` as a Scope; ValueError for anything else."""
    for scope in SCOPES:
        if value == scope:
            return scope
    raise ValueError(f"Unknown direction scope '{value}' (expected one of {', '.join(SCOPES)}).")


@dataclass(frozen=True)
class Kernel:
    max_weight: float
    max_weight_position: float
    min_weight: float
    min_weight_distance: float

    def weight_at(self, layer: int) -> float:
        distance = abs(layer - self.max_weight_position)
        if distance > self.min_weight_distance:
            return 0.0
        if self.min_weight_distance <= 0:
            return self.max_weight
        t = distance / self.min_weight_distance
        return self.max_weight + t * (self.min_weight - self.max_weight)


@dataclass(frozen=True)
class AblationParams:
    kernels: dict[str, Kernel]
    direction_scope: Scope
    direction_index: float | None = None  # residual position, used when scope is global

    def strengths(self, component: str, num_layers: int) -> list[float]:
        kernel = self.kernels.get(component)
        if kernel is None:
            return [0.0] * num_layers
        return [kernel.weight_at(layer) for layer in range(num_layers)]

    def to_dict(self) -> JsonDict:
        return {
            "direction_scope": self.direction_scope,
            "direction_index": self.direction_index,
            "kernels": {name: asdict(k) for name, k in self.kernels.items()},
        }

    @classmethod
    def from_dict(cls, data: JsonDict) -> AblationParams:
        return cls(
            kernels={name: Kernel(**k) for name, k in data["kernels"].items()},
            direction_scope=data["direction_scope"],
            direction_index=data.get("direction_index"),
        )


def _orthonormal(rows: torch.Tensor) -> torch.Tensor:
    q: torch.Tensor = torch.linalg.qr(rows.T)[0]
    return q.T


def layer_bases(
    directions: Directions, params: AblationParams, num_layers: int
) -> list[torch.Tensor]:
    """(k, hidden) orthonormal basis removed at each layer. Layer l writes the residual at
    position l+1, so per-layer mode uses that position's directions."""
    if params.direction_scope == "per-layer":
        return [directions.basis[layer + 1] for layer in range(num_layers)]
    index = float(params.direction_index if params.direction_index is not None else num_layers / 2)
    index = min(max(index, 0.0), directions.basis.shape[0] - 1.0)
    low, frac = int(math.floor(index)), index - math.floor(index)
    high = min(low + 1, directions.basis.shape[0] - 1)
    main = F.normalize((1 - frac) * directions.main[low] + frac * directions.main[high], dim=-1)
    if directions.k == 1:
        return [main[None]] * num_layers
    nearest = directions.basis[round(index)]
    basis = _orthonormal(torch.cat([main[None], nearest[1:]]))
    # QR may flip the sign of the first row; a direction's sign does not change the projection.
    return [basis] * num_layers
