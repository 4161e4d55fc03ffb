"""The search space: settings ranges turned into Optuna suggestions and back into parameters.

Every parameter is suggested in every trial (direction_index even when the scope is per-layer),
so multivariate TPE sees one fixed space. The position ranges (peak position, fall-off distance,
direction index) come from the settings when the user gave them, else from the layer profile's
prior (`heretic.engine.layer_profile`), else from the fixed late-layer defaults below.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from heretic.config.settings import Settings
from heretic.engine.layer_profile import LayerPrior
from heretic.engine.parameters import AblationParams, Kernel, parse_scope

# Used only without a prior (it is computed from the residuals in every run): the late-layer
# habit of large chat models.
FALLBACK_RANGES: dict[str, tuple[float, float]] = {
    "max_weight_position": (0.6, 1.0),
    "min_weight_distance": (0.0, 0.6),
    "direction_index": (0.4, 0.9),
}
PRIOR_KEYS = tuple(FALLBACK_RANGES)


@dataclass(frozen=True)
class SearchSpace:
    settings: Settings
    num_layers: int
    prior: LayerPrior | None = None

    def range_of(self, name: str) -> tuple[float, float]:
        """(low, high) as fractions of the last layer index: the user's setting wins."""
        given = getattr(self.settings, name)
        if given is not None:
            return float(given.low), float(given.high)
        if self.prior is not None:
            prior_range: tuple[float, float] = getattr(self.prior, name)
            return prior_range
        return FALLBACK_RANGES[name]

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: self.range_of(name) for name in PRIOR_KEYS}

    @property
    def last(self) -> float:
        return float(max(self.num_layers - 1, 1))

    def suggest(self, trial: optuna.Trial) -> AblationParams:
        s, last = self.settings, self.last
        pos_range, dist_range = (
            self.range_of("max_weight_position"),
            self.range_of("min_weight_distance"),
        )
        index_range = self.range_of("direction_index")
        kernels: dict[str, Kernel] = {}
        for c in s.components:
            peak = trial.suggest_float(f"{c}.max_weight", s.max_weight.low, s.max_weight.high)
            pos = trial.suggest_float(
                f"{c}.max_weight_position", pos_range[0] * last, pos_range[1] * last
            )
            frac = trial.suggest_float(
                f"{c}.min_weight_fraction", s.min_weight_fraction.low, s.min_weight_fraction.high
            )
            dist = trial.suggest_float(
                f"{c}.min_weight_distance",
                max(1.0, dist_range[0] * last),
                max(1.0, dist_range[1] * last),
            )
            kernels[c] = Kernel(peak, pos, frac * peak, dist)
        scope = parse_scope(trial.suggest_categorical("direction_scope", list(s.direction_scopes)))
        # Residual position 1 + f*(L-1): the output of the layer at fraction f of the depth.
        index = trial.suggest_float(
            "direction_index", 1 + index_range[0] * last, 1 + index_range[1] * last
        )
        return AblationParams(kernels, scope, index if scope == "global" else None)
