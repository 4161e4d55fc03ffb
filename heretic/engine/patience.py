"""Stop when done: end the search once the best selectable trial meets the refusal target and
has not improved for `patience` completed trials.

- Selectable: what the selection policy could take (KL <= kl_cap for fewest-refusals,
  refusals <= refusal_cap for lowest-kl), scored with the REAL KL.
- Improved: fewer refusals, or (same refusals) a KL lower by more than kl_target for
  fewest-refusals; the mirror image for lowest-kl. KL steps below the target are noise and do
  not reset the count.
- Exact: with the best found at completed trial i (0-based, completion order), the search stops
  after trial i + patience completes, so i + patience + 1 trials in all.
The rule reads only the study, so a resumed run or another worker reaches the same decision;
patience is not part of the study's identity, so a study stopped early can be resumed to the
full --trials with patience off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optuna.trial import FrozenTrial

from heretic.config.settings import Settings
from heretic.engine.selection import TrialScore, score


@dataclass(frozen=True)
class StopRule:
    patience: int  # 0 = off
    target_refusals: int  # the best must have at most this many refusals
    selection: str
    kl_cap: float
    refusal_cap: int
    kl_target: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, n_harmful: int) -> StopRule:
        return cls(
            patience=settings.patience,
            target_refusals=math.floor(settings.patience_refusals * n_harmful + 1e-9),
            selection=settings.selection,
            kl_cap=settings.kl_cap,
            refusal_cap=settings.refusal_cap,
            kl_target=settings.kl_target,
        )

    def _selectable(self, s: TrialScore) -> bool:
        if self.selection == "lowest-kl":
            return s.refusals <= self.refusal_cap
        return s.kl <= self.kl_cap

    def _better(self, new: TrialScore, old: TrialScore) -> bool:
        if self.selection == "lowest-kl":
            if new.kl < old.kl - self.kl_target:
                return True
            return abs(new.kl - old.kl) <= self.kl_target and new.refusals < old.refusals
        if new.refusals != old.refusals:
            return new.refusals < old.refusals
        return new.kl < old.kl - self.kl_target

    def reason(self, trials: list[FrozenTrial]) -> str | None:
        """Why the search should stop now, or None to go on. `trials`: completed trials."""
        if self.patience <= 0:
            return None
        ordered = sorted((t for t in trials if t.values is not None), key=lambda t: t.number)
        best: TrialScore | None = None
        best_at = -1
        for position, trial in enumerate(ordered):
            s = score(trial)
            if self._selectable(s) and (best is None or self._better(s, best)):
                best, best_at = s, position
        if best is None or best.refusals > self.target_refusals:
            return None
        since = len(ordered) - 1 - best_at
        if since < self.patience:
            return None
        gain = f"fewer refusals or a KL lower by more than {self.kl_target:g}"
        return (
            f"patience: trial {best.number} reached {best.refusals} refusals (target <= "
            f"{self.target_refusals}) at KL {best.kl:.3g}, and none of the {since} trials "
            f"after it did better ({gain})"
        )
