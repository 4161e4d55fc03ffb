"""The search space: settings ranges turned into Optuna suggestions and back into parameters.

Every parameter is suggested in every trial (direction_index even when the scope is per-layer),
so multivariate TPE sees one fixed space.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from heretic.config.settings import Settings
from heretic.engine.parameters import AblationParams, Kernel


@dataclass(frozen=True)
class SearchSpace:
    settings: Settings
    num_layers: int

    @property
    def last(self) -> float:
        return float(max(self.num_layers - 1, 1))

    def suggest(self, trial: optuna.Trial) -> AblationParams:
        s, last = self.settings, self.last
        kernels = {}
        for c in s.components:
            peak = trial.suggest_float(f"{c}.max_weight", s.max_weight.low, s.max_weight.high)
            pos = trial.suggest_float(
                f"{c}.max_weight_position",
                s.max_weight_position.low * last,
                s.max_weight_position.high * last,
            )
            frac = trial.suggest_float(
                f"{c}.min_weight_fraction", s.min_weight_fraction.low, s.min_weight_fraction.high
            )
            dist = trial.suggest_float(
                f"{c}.min_weight_distance",
                max(1.0, s.min_weight_distance.low * last),
                max(1.0, s.min_weight_distance.high * last),
            )
            kernels[c] = Kernel(peak, pos, frac * peak, dist)
        scope = trial.suggest_categorical("direction_scope", list(s.direction_scopes))
        # Residual position 1 + f*(L-1): the output of the layer at fraction f of the depth.
        index = trial.suggest_float(
            "direction_index", 1 + s.direction_index.low * last, 1 + s.direction_index.high * last
        )
        return AblationParams(kernels, scope, index if scope == "global" else None)

    @staticmethod
    def from_optuna_params(params: dict[str, object], components: list[str]) -> AblationParams:
        kernels = {}
        for c in components:
            peak = float(params[f"{c}.max_weight"])  # type: ignore[arg-type]
            kernels[c] = Kernel(
                peak,
                float(params[f"{c}.max_weight_position"]),  # type: ignore[arg-type]
                float(params[f"{c}.min_weight_fraction"]) * peak,  # type: ignore[arg-type]
                float(params[f"{c}.min_weight_distance"]),  # type: ignore[arg-type]
            )
        scope = str(params["direction_scope"])
        index = float(params["direction_index"]) if scope == "global" else None  # type: ignore[arg-type]
        return AblationParams(kernels, scope, index)  # type: ignore[arg-type]
