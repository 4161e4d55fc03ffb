"""Verification of chosen edits on prompts the search never scored.

The search picks a trial by its scores on the evaluation prompts, so those scores carry a
selection bias. This module measures an edit on a separate verification split instead:

- refusals on the verification harmful prompts, with a longer token budget than the search's
  (short budgets under-count refusals that start late);
- KL(base || edited) of the first response token on the verification harmless prompts;
- how many everyday answers changed, in words a user reads: the share of greedy answers to the
  verification harmless prompts whose first `compare_tokens` tokens are identical to the base
  model's, and the share whose first sentence changed;
- a few before/after pairs, harmful and harmless, for the report and the model card.

The base model's answers are generated once and reused for every edit that is verified.
What this cannot tell (marker-based counting misses refusals without a marker and counts a
disclaimer followed by an answer as a refusal) is said in the model card, with the markers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from heretic.engine.ablation import Ablator
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.evaluation import Evaluator
from heretic.engine.parameters import AblationParams

EXAMPLES = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s|\n")


def first_sentence(text: str) -> str:
    """The text up to its first sentence end (., ! or ? before a space, or a line break),
    whitespace-normalized; the whole text when it has none within the compared tokens."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0]
    return " ".join(head.split())


@dataclass(frozen=True)
class Example:
    prompt: str
    base: str
    edited: str


@dataclass(frozen=True)
class Verified:
    """One edit (or the base model, trial None) measured on the verification split."""

    trial: int | None
    refusals: int
    n_harmful: int
    kl_divergence: float
    harmless_unchanged: float  # share of answers identical for the first compare_tokens tokens
    first_sentence_changed: float  # share of answers whose first sentence differs
    n_harmless: int
    harmful_examples: list[Example] = field(default_factory=list)
    harmless_examples: list[Example] = field(default_factory=list)
    # every answer, in prompt order: what a judge reads (heretic.run.judge_phase)
    harmful_answers: list[str] = field(default_factory=list)
    harmless_answers: list[str] = field(default_factory=list)
    # the answer damage on the verification harmless prompts (None: damage_metric=first_token)
    answer_kl: float | None = None


@dataclass
class _Answers:
    harmful: list[str]
    harmless: list[str]


def share(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 0.0


class Verifier:
    """Measures edits on the verification prompts; `evaluator` holds them and the base KL
    reference (its harmless prompts are the verification harmless prompts)."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        compare_tokens: int,
        full_answers: bool = False,
        damage: AnswerKL | None = None,
    ) -> None:
        self.evaluator = evaluator
        # The search's answer damage, on the verification harmless prompts (prepared by the
        # caller on the unedited model), so the verified figures use the same measure.
        self.damage = damage
        self.compare_tokens = compare_tokens
        # A judge reads what follows a marker (a disclaimer, then help): answers run on.
        self.full_answers = full_answers
        self._base: _Answers | None = None

    def _answers(self) -> _Answers:
        ev = self.evaluator
        return _Answers(
            harmful=ev.generate(ev.harmful, stop_at_markers=not self.full_answers),
            harmless=ev.generate(ev.harmless, self.compare_tokens, stop_at_markers=False),
        )

    def base(self) -> Verified:
        self.evaluator.compute_base()
        self._base = self._answers()
        return self._measure(None, self._base, kl=0.0)

    def edit(self, ablator: Ablator, params: AblationParams, trial: int | None) -> Verified:
        if self._base is None:
            self.base()
        with ablator.applied(params):
            kl = self.evaluator.kl_divergence()
            answer_kl = self.damage.measure().answer_kl if self.damage is not None else None
            answers = self._answers()
        measured = self._measure(trial, answers, kl=kl)
        return replace(measured, answer_kl=answer_kl)

    def _measure(self, trial: int | None, answers: _Answers, *, kl: float) -> Verified:
        assert self._base is not None
        ev, base = self.evaluator, self._base
        unchanged = [a == b for a, b in zip(answers.harmless, base.harmless, strict=True)]
        sentence = [
            first_sentence(a) != first_sentence(b)
            for a, b in zip(answers.harmless, base.harmless, strict=True)
        ]
        return Verified(
            trial=trial,
            refusals=sum(ev.is_refusal(t) for t in answers.harmful),
            n_harmful=len(answers.harmful),
            kl_divergence=kl,
            harmless_unchanged=share(unchanged),
            first_sentence_changed=share(sentence),
            n_harmless=len(answers.harmless),
            harmful_examples=_examples(ev.harmful, base.harmful, answers.harmful),
            harmless_examples=_examples(ev.harmless, base.harmless, answers.harmless),
            harmful_answers=answers.harmful,
            harmless_answers=answers.harmless,
        )


def _examples(prompts: Sequence[str], base: Sequence[str], edited: Sequence[str]) -> list[Example]:
    return [
        Example(p, b, e) for p, b, e in list(zip(prompts, base, edited, strict=True))[:EXAMPLES]
    ]


@dataclass(frozen=True)
class VerifiedChoice:
    chosen: Verified
    why: str


def choose_verified(measured: Sequence[Verified], refusal_target: float) -> VerifiedChoice:
    """The edit to ship among verified candidates, `measured[0]` being the search's choice.

    Rule: the candidates whose verified refusals are at most the target (refusal_target of the
    verification's harmful prompts) or, when none reaches it, at most the fewest any has; among
    them the most harmless answers unchanged, then fewer refusals, then the search's order. So a
    choice that only looked better on the prompts it was selected on loses to one that does the
    same job on the held-back prompts and changes fewer everyday answers."""
    first = measured[0]
    target = math.floor(refusal_target * first.n_harmful + 1e-9)
    limit = max(target, min(v.refusals for v in measured))
    eligible = [(i, v) for i, v in enumerate(measured) if v.refusals <= limit]
    _, best = min(eligible, key=lambda iv: (-iv[1].harmless_unchanged, iv[1].refusals, iv[0]))
    reach = (
        f"at most {target} refusals ({refusal_target:.0%}, refusal_target)"
        if limit == target
        else f"the fewest refusals any reached ({limit}; none reached the target of {target})"
    )

    def figures(v: Verified) -> str:
        return f"{v.refusals}/{v.n_harmful} refusals, {v.harmless_unchanged:.0%} unchanged"

    if best is first:
        why = (
            f"on the held-back prompts the search's choice, trial {first.trial}, has "
            f"{figures(first)}; of the {len(measured)} verified candidates with {reach}, none "
            "left more harmless answers unchanged"
        )
    else:
        why = (
            f"trial {best.trial} replaces the search's choice, trial {first.trial}: on the "
            f"held-back prompts it has {figures(best)} against {figures(first)} (candidates "
            f"with {reach}, the most harmless answers unchanged wins)"
        )
    return VerifiedChoice(best, why)
