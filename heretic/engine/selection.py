"""Unattended choice of one trial, by a policy, with no menu.

- fewest-refusals (default): among trials with KL <= kl_cap, the fewest refusals, then lowest KL.
- lowest-kl: among trials with refusals <= refusal_cap, the lowest KL, then fewest refusals.
Ties after both keys go to the earlier trial. None acceptable -> None (the caller reports it).
"""

from __future__ import annotations

from dataclasses import dataclass

from optuna.trial import FrozenTrial

from heretic.engine.trial_record import TrialRecord


@dataclass(frozen=True)
class TrialScore:
    number: int
    refusals: int
    kl: float


def score(trial: FrozenTrial) -> TrialScore:
    """The trial's refusals and its REAL damage (`kl`: the answer KL or, in older studies and
    with damage_metric=first_token, the first-token KL): the objective value may be shaped
    (raised to the target), the recorded attribute never is."""
    refusals, kl = trial.values
    record = TrialRecord.read(trial)
    recorded = record.damage if record.damage is not None else record.kl_divergence
    if recorded is not None:
        kl = recorded
    return TrialScore(trial.number, int(refusals), float(kl))


def refusal_share(trial: FrozenTrial) -> float:
    """Refusals as a share of the harmful prompts the trial was scored on."""
    n = TrialRecord.read(trial).n_harmful
    return score(trial).refusals / n if n else 0.0


def select(
    trials: list[FrozenTrial],
    policy: str,
    kl_cap: float,
    refusal_cap: int,
    max_refusal_share: float = 1.0,
) -> FrozenTrial | None:
    """The trial the policy takes, or None. fewest-refusals also refuses a "best" trial that
    leaves more than max_refusal_share of the prompts refused: a model whose refusal was not
    removed must end as a failure (exit 9), not as a silently bad export."""
    scored = [(score(t), t) for t in trials if t.values is not None]
    if policy == "lowest-kl":
        ok = [(s, t) for s, t in scored if s.refusals <= refusal_cap]
        key = lambda st: (st[0].kl, st[0].refusals, st[0].number)  # noqa: E731
    else:
        ok = [
            (s, t)
            for s, t in scored
            if s.kl <= kl_cap and refusal_share(t) <= max_refusal_share + 1e-9
        ]
        key = lambda st: (st[0].refusals, st[0].kl, st[0].number)  # noqa: E731
    return min(ok, key=key)[1] if ok else None


def pareto_front(trials: list[FrozenTrial]) -> list[TrialScore]:
    """Trials not dominated in (refusals, KL), sorted by refusals."""
    scores = [score(t) for t in trials if t.values is not None]
    front = [
        s
        for s in scores
        if not any(
            (o.refusals <= s.refusals and o.kl <= s.kl) and (o.refusals < s.refusals or o.kl < s.kl)
            for o in scores
        )
    ]
    return sorted(front, key=lambda s: (s.refusals, s.kl, s.number))


def front_neighbours(trials: list[FrozenTrial], selected: int, k: int) -> list[int]:
    """Up to k Pareto-front trials nearest the selected one along the front (gentler edits,
    i.e. lower KL, first on ties), so a user can trade refusals for KL with known figures."""
    front = [s.number for s in pareto_front(trials)]
    if selected not in front or k <= 0:
        return [n for n in front if n != selected][:k]
    at = front.index(selected)
    others = [(abs(i - at), -i, n) for i, n in enumerate(front) if n != selected]
    return [n for _, _, n in sorted(others)[:k]]
