"""Where the model keeps its refusal: a per-layer separation profile from the residuals, and the
search-space prior derived from it.

- Separation at residual position i (0 = embedding output, i = output of layer i-1): Cohen's d
  of harmful vs harmless projections onto the difference-of-means direction at i,
  cross-validated: the direction is fitted on one half of the prompts and measured on the
  other, both ways, and averaged. In-sample, a direction fitted to n prompts in a d >> n space
  separates them at any layer, random or not; held out, it separates only where the model
  really does.
- Write separation of layer l: the same d of what the layer adds to the residual
  (x[l+1] - x[l]) along the direction at l+1: large where the layer writes the refusal feature.
  The residual's separation, once written, is carried to every later position, so the writes
  (not the residual) say where an edit must act.
- The prior: peak positions around the layers that write most, a fall-off wide enough to
  reach all of them, and a direction index from the first strongly separated position on.
  Guaranteed: the peak range covers every layer whose write separation is at least
  WRITER_SHARE of the largest; ranges are never narrower than MIN_WIDTH of the depth.
  Not guaranteed: that the refusal lies along one direction (that is the method's assumption).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from heretic.jsontypes import JsonDict

WRITER_SHARE = 0.3  # a layer writes the refusal if its write separation >= this x the largest
STRONG_SHARE = 0.6  # a residual position is strongly separated at >= this x the largest
MIN_SEPARATION = 0.5  # below this everywhere, no layer separates: search the whole stack
MIN_WIDTH = 0.3  # no range narrower than this fraction of the depth (robustness)


@dataclass(frozen=True)
class LayerProfile:
    separation: list[float]  # per residual position 0..L (0 = embeddings)
    write_separation: list[float]  # per decoder layer 0..L-1

    @property
    def num_layers(self) -> int:
        return len(self.write_separation)

    def to_dict(self) -> dict[str, list[float]]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> LayerProfile:
        return cls(
            [float(x) for x in data["separation"]], [float(x) for x in data["write_separation"]]
        )


@dataclass(frozen=True)
class LayerPrior:
    """Search ranges as fractions of the last layer index (the units of the settings)."""

    max_weight_position: tuple[float, float]
    min_weight_distance: tuple[float, float]
    direction_index: tuple[float, float]
    writers: list[int]  # layers taken as writing the refusal
    reason: str

    def to_dict(self) -> JsonDict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: JsonDict) -> LayerPrior:
        """`data`: `to_dict()` read back from JSON (the pairs come back as lists)."""
        return cls(
            tuple(data["max_weight_position"]),
            tuple(data["min_weight_distance"]),
            tuple(data["direction_index"]),
            [int(x) for x in data["writers"]],
            str(data["reason"]),
        )


def _cohen_d(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """pos (n, P), neg (m, P) projections -> (P,) gap of means over pooled standard deviation."""
    gap = pos.mean(0) - neg.mean(0)
    pooled = ((pos.var(0, unbiased=False) + neg.var(0, unbiased=False)) / 2).sqrt()
    scale = (pos.abs().mean(0) + neg.abs().mean(0)).clamp_min(1e-12)
    # A constant projection (same token, same state for every prompt) has no separation at all.
    return torch.where(pooled > 1e-6 * scale, gap / pooled.clamp_min(1e-30), torch.zeros_like(gap))


def _fold(
    fit_h: torch.Tensor, fit_b: torch.Tensor, test_h: torch.Tensor, test_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One fold: directions from `fit`, d measured on `test`. Inputs (n, L+1, d)."""
    dirs = F.normalize(fit_h.mean(0) - fit_b.mean(0), dim=-1)  # (L+1, d)
    ph, pb = (test_h * dirs).sum(-1), (test_b * dirs).sum(-1)  # (n, L+1)
    # Layer l's write along the direction at l+1: x[l+1].r[l+1] - x[l].r[l+1].
    wh = ph[:, 1:] - (test_h[:, :-1] * dirs[1:]).sum(-1)
    wb = pb[:, 1:] - (test_b[:, :-1] * dirs[1:]).sum(-1)
    return _cohen_d(ph, pb), _cohen_d(wh, wb)


def layer_profile(harmful: torch.Tensor, harmless: torch.Tensor) -> LayerProfile:
    """harmful (n, L+1, d), harmless (m, L+1, d) residuals -> the profile (two-fold CV; with
    fewer than 4 prompts on a side, in-sample)."""
    harmful, harmless = harmful.float(), harmless.float()
    if min(harmful.shape[0], harmless.shape[0]) < 4:
        sep, write = _fold(harmful, harmless, harmful, harmless)
    else:
        h1, h2, b1, b2 = harmful[0::2], harmful[1::2], harmless[0::2], harmless[1::2]
        s1, w1 = _fold(h1, b1, h2, b2)
        s2, w2 = _fold(h2, b2, h1, b1)
        sep, write = (s1 + s2) / 2, (w1 + w2) / 2
    return LayerProfile([round(float(x), 4) for x in sep], [round(float(x), 4) for x in write])


def _widen(low: float, high: float, width: float, top: float) -> tuple[float, float]:
    """[low, high] grown symmetrically to at least `width`, kept inside [0, top]."""
    grow = max(width - (high - low), 0.0) / 2
    low, high = low - grow, high + grow
    if low < 0:
        low, high = 0.0, min(top, high - low)
    if high > top:
        low, high = max(0.0, low - (high - top)), top
    return low, high


def derive_prior(profile: LayerProfile) -> LayerPrior:
    layers = profile.num_layers
    last = float(max(layers - 1, 1))
    sep = profile.separation
    if max(sep, default=0.0) < MIN_SEPARATION:
        return LayerPrior(
            (0.0, 1.0),
            (0.2, 1.0),
            (0.0, 1.0),
            list(range(layers)),
            f"no layer separates clearly (largest d {max(sep, default=0):.2f}): "
            "the whole stack is searched",
        )
    writes = [max(w, 0.0) for w in profile.write_separation]
    top = max(writes)
    writers = [i for i, w in enumerate(writes) if top > 0 and w >= WRITER_SHARE * top]
    writers = writers or list(range(layers))
    lo, hi = min(writers), max(writers)
    peak = _widen(max(lo - 1.0, 0.0), min(hi + 1.0, last), MIN_WIDTH * last, last)
    # The kernel must be able to reach every writer from any peak in the range.
    reach = max(hi - peak[0], peak[1] - lo, 1.0) / last
    distance = (0.0, min(1.0, max(0.6, reach)))
    # Directions: residual position p is fraction (p - 1) / last. From one position before the
    # first writer's output (or the first strongly separated position, if earlier) to the end.
    strong = [p for p in range(1, layers + 1) if sep[p] >= STRONG_SHARE * max(sep)]
    first = min([lo + 1, *strong[:1]]) - 1.0  # one position of margin
    index = _widen(max(first - 1.0, 0.0) / last, 1.0, MIN_WIDTH, 1.0)
    reason = (
        f"separation peaks at d={max(sep):.2f} (position {sep.index(max(sep))}); the refusal "
        f"is written mostly by layer{'s' if lo != hi else ''} "
        f"{lo}{f'-{hi}' if hi != lo else ''} of {layers}"
    )
    return LayerPrior(
        _round(peak, last), (0.0, round(distance[1], 3)), _round(index, 1.0), writers, reason
    )


def _round(pair: tuple[float, float], scale: float) -> tuple[float, float]:
    return round(pair[0] / scale, 3), round(pair[1] / scale, 3)


def summary_line(profile: LayerProfile, prior: LayerPrior) -> str:
    pos = prior.max_weight_position
    idx = prior.direction_index
    return (
        f"Layer profile: {prior.reason}; search: peak at {pos[0]:.2f}-{pos[1]:.2f}, "
        f"direction at {idx[0]:.2f}-{idx[1]:.2f} of the depth."
    )
