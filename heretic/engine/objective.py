"""One trial: parameters in, (refusals, shaped KL divergence) out, with its facts stored on the
trial.

Shaping: below `kl_target`, KL differences are noise to the user, so the value the sampler
sees is max(KL, kl_target): all such trials tie on KL and are ranked by refusals, and the
sampler stops spending trials on edits that "do nothing" ever more gently. The real KL is the
trial's `kl_divergence` attribute, which selection and every report read
(`heretic.engine.selection.score`).
"""

from __future__ import annotations

import time

import optuna

from heretic.engine.ablation import Ablator
from heretic.engine.evaluation import Evaluator
from heretic.engine.space import SearchSpace
from heretic.engine.trial_record import TrialRecord

SAMPLE_RESPONSES = 3


class TrialObjective:
    def __init__(
        self, ablator: Ablator, evaluator: Evaluator, space: SearchSpace, kl_target: float = 0.0
    ) -> None:
        self.ablator = ablator
        self.evaluator = evaluator
        self.space = space
        self.kl_target = kl_target

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = self.space.suggest(trial)
        start = time.monotonic()
        with self.ablator.applied(params):
            kl = self.evaluator.kl_divergence()
            refusals = self.evaluator.refusals()
        TrialRecord(
            parameters=params.to_dict(),
            refusals=refusals.count,
            n_harmful=refusals.total,
            kl_divergence=kl,
            duration_s=time.monotonic() - start,
            sample_responses=refusals.responses[:SAMPLE_RESPONSES],
        ).write(trial)
        if refusals.marker_count is not None:  # a judge counted; the markers' count beside it
            trial.set_user_attr("marker_refusals", refusals.marker_count)
        return float(refusals.count), shaped_kl(kl, self.kl_target)


def shaped_kl(kl: float, target: float) -> float:
    return max(float(kl), float(target))
