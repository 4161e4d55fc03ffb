"""One trial: parameters in, (refusals, KL divergence) out, with its facts stored on the trial."""

from __future__ import annotations

import time

import optuna

from heretic.engine.ablation import Ablator
from heretic.engine.evaluation import Evaluator
from heretic.engine.space import SearchSpace

SAMPLE_RESPONSES = 3


class TrialObjective:
    def __init__(self, ablator: Ablator, evaluator: Evaluator, space: SearchSpace) -> None:
        self.ablator = ablator
        self.evaluator = evaluator
        self.space = space

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        params = self.space.suggest(trial)
        start = time.monotonic()
        with self.ablator.applied(params):
            kl = self.evaluator.kl_divergence()
            refusals = self.evaluator.refusals()
        trial.set_user_attr("parameters", params.to_dict())
        trial.set_user_attr("refusals", refusals.count)
        trial.set_user_attr("n_harmful", refusals.total)
        trial.set_user_attr("kl_divergence", kl)
        trial.set_user_attr("duration_s", time.monotonic() - start)
        trial.set_user_attr("sample_responses", refusals.responses[:SAMPLE_RESPONSES])
        return float(refusals.count), kl
