"""The facts the objective stores on every Optuna trial (its user attributes), in one typed
record: written by `heretic.engine.objective`, read by selection, the report and the recipe.

The attribute names are defined here only. Studies on disk hold them, so they never change.
Reading is tolerant: a missing attribute reads as its field's default (a study written by an
older version, or a trial made by hand in a test), the defaults the readers always used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from heretic.jsontypes import JsonDict

PARAMETERS = "parameters"
REFUSALS = "refusals"
N_HARMFUL = "n_harmful"
KL_DIVERGENCE = "kl_divergence"
ANSWER_KL = "answer_kl"
DAMAGE = "damage"
DURATION_S = "duration_s"
SAMPLE_RESPONSES = "sample_responses"


@dataclass(frozen=True)
class TrialRecord:
    parameters: JsonDict | None = None  # AblationParams.to_dict(); None: not recorded
    refusals: int | None = None  # refused harmful prompts; None: not recorded
    n_harmful: int = 0  # harmful prompts the trial was scored on; 0: not recorded
    kl_divergence: float | None = None  # first-token KL (never shaped); None: not recorded
    answer_kl: float | None = None  # KL along the base answers; None: not measured
    # The damage the search minimised (the real value, never shaped): the answer KL or the
    # first-token KL, as damage_metric said; None (older studies): the first-token KL.
    damage: float | None = None
    duration_s: float | None = None  # wall time of the trial's evaluation; None: not recorded
    sample_responses: list[str] = field(default_factory=list)  # the first few answers

    def write(self, trial: optuna.Trial) -> None:
        trial.set_user_attr(PARAMETERS, self.parameters)
        trial.set_user_attr(REFUSALS, self.refusals)
        trial.set_user_attr(N_HARMFUL, self.n_harmful)
        trial.set_user_attr(KL_DIVERGENCE, self.kl_divergence)
        trial.set_user_attr(ANSWER_KL, self.answer_kl)
        trial.set_user_attr(DAMAGE, self.damage)
        trial.set_user_attr(DURATION_S, self.duration_s)
        trial.set_user_attr(SAMPLE_RESPONSES, self.sample_responses)

    @classmethod
    def read(cls, trial: FrozenTrial) -> TrialRecord:
        attrs = trial.user_attrs
        return cls(
            parameters=attrs.get(PARAMETERS),
            refusals=attrs.get(REFUSALS),
            n_harmful=attrs.get(N_HARMFUL) or 0,
            kl_divergence=attrs.get(KL_DIVERGENCE),
            answer_kl=attrs.get(ANSWER_KL),
            damage=attrs.get(DAMAGE),
            duration_s=attrs.get(DURATION_S),
            sample_responses=attrs.get(SAMPLE_RESPONSES, []),
        )

    def required_parameters(self) -> JsonDict:
        """The recorded parameters; KeyError (as a plain `user_attrs[...]` lookup raised) when
        the trial has none."""
        if self.parameters is None:
            raise KeyError(PARAMETERS)
        return self.parameters
