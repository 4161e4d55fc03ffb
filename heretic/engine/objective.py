"""One trial: parameters in, (refusals, shaped damage) out, with its facts stored on the trial.

Damage: with an `AnswerKL` (damage_metric=answer, the default) the KL divergence from the base
model along its own greedy answers to the harmless prompts, with the first-token KL taken from
the same forward pass; without one (damage_metric=first_token, heretic-llm's measure) the
first-token KL of the evaluator, and no answer KL.

Shaping: below `kl_target`, damage differences are noise to the user, so the value the sampler
sees is max(damage, kl_target): all such trials tie on damage and are ranked by refusals, and
the sampler stops spending trials on edits that "do nothing" ever more gently. The real damage
is the trial's `damage` attribute, which selection and every report read
(`heretic.engine.selection.score`).
"""

from __future__ import annotations

import time

import optuna

from heretic.engine.ablation import Ablator
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.evaluation import Evaluator
from heretic.engine.space import SearchSpace
from heretic.engine.trial_record import TrialRecord

SAMPLE_RESPONSES = 3


class TrialObjective:
    def __init__(
        self,
        ablator: Ablator,
        evaluator: Evaluator,
        space: SearchSpace,
        kl_target: float = 0.0,
        answer_kl: AnswerKL | None = None,
    ) -> None:
        self.ablator = ablator
        self.evaluator = evaluator
        self.space = space
        self.kl_target = kl_target
        self.answer_kl = answer_kl

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = self.space.suggest(trial)
        start = time.monotonic()
        answer: float | None = None
        with self.ablator.applied(params):
            if self.answer_kl is not None:
                measured = self.answer_kl.measure()
                answer, first = measured.answer_kl, measured.first_token_kl
            else:
                first = self.evaluator.kl_divergence()
            refusals = self.evaluator.refusals()
        damage = answer if answer is not None else first
        TrialRecord(
            parameters=params.to_dict(),
            refusals=refusals.count,
            n_harmful=refusals.total,
            kl_divergence=first,
            answer_kl=answer,
            damage=damage,
            duration_s=time.monotonic() - start,
            sample_responses=refusals.responses[:SAMPLE_RESPONSES],
        ).write(trial)
        if refusals.marker_count is not None:  # a judge counted; the markers' count beside it
            trial.set_user_attr("marker_refusals", refusals.marker_count)
        return float(refusals.count), shaped_kl(damage, self.kl_target)


def shaped_kl(kl: float, target: float) -> float:
    return max(float(kl), float(target))
