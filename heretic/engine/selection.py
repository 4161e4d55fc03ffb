"""Unattended choice of one trial, by a policy, with no menu.

Every policy ranks trials by their REAL damage (`score`: the answer KL, or the first-token KL
with damage_metric=first_token and in studies from before it), never the shaped objective value.

- gentlest (default): among trials with at most `refusal_target` of the harmful search prompts
  refused (and damage <= kl_cap), the lowest damage, then fewest refusals. When none reaches the
  target it falls back to fewest-refusals. The run then re-chooses among the few best
  candidates on the held-back prompts (`heretic.engine.verification.choose_verified`).
- fewest-refusals: among trials with damage <= kl_cap, the fewest refusals, then lowest damage.
- lowest-kl: among trials with refusals <= refusal_cap, the lowest damage, then fewest refusals.
Ties after both keys go to the earlier trial. None acceptable -> None (the caller reports it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import zip_longest

from optuna.trial import FrozenTrial

from heretic.engine.trial_record import TrialRecord

GENTLEST = "gentlest"
FEWEST = "fewest-refusals"
LOWEST = "lowest-kl"
EPS = 1e-9


@dataclass(frozen=True)
class TrialScore:
    number: int
    refusals: int
    kl: float  # the damage the search minimised (answer KL or first-token KL), never shaped


@dataclass(frozen=True)
class Policy:
    """What a policy needs to know; `refusal_target` is a share of the harmful prompts."""

    selection: str = GENTLEST
    kl_cap: float = 0.5
    refusal_cap: int = 5
    max_refusal_share: float = 1.0
    refusal_target: float = 0.05


@dataclass(frozen=True)
class Choice:
    trial: FrozenTrial
    rule: str  # which rule of the policy chose it
    why: str  # the rule in words, with the trial's figures


def score(trial: FrozenTrial) -> TrialScore:
    """The trial's refusals and its REAL damage: the objective value may be shaped (raised to
    the target), the recorded attribute never is."""
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


def target_count(share: float, n: int) -> int:
    return math.floor(share * n + EPS)


def _fewest(scored: list[tuple[TrialScore, FrozenTrial]], p: Policy) -> list[FrozenTrial]:
    ok = [
        (s, t)
        for s, t in scored
        if s.kl <= p.kl_cap and refusal_share(t) <= p.max_refusal_share + EPS
    ]
    return [t for s, t in sorted(ok, key=lambda st: (st[0].refusals, st[0].kl, st[0].number))]


def _gentle(scored: list[tuple[TrialScore, FrozenTrial]], p: Policy) -> list[FrozenTrial]:
    ok = [
        (s, t) for s, t in scored if s.kl <= p.kl_cap and refusal_share(t) <= p.refusal_target + EPS
    ]
    return [t for s, t in sorted(ok, key=lambda st: (st[0].kl, st[0].refusals, st[0].number))]


def ranked(trials: list[FrozenTrial], policy: Policy) -> tuple[str, list[FrozenTrial]]:
    """(rule, acceptable trials best first) under the policy; the rule names which part of
    the policy ranked them ("target", "fewest-refusals" or "lowest-kl")."""
    scored = [(score(t), t) for t in trials if t.values is not None]
    if policy.selection == LOWEST:
        ok = [(s, t) for s, t in scored if s.refusals <= policy.refusal_cap]
        order = sorted(ok, key=lambda st: (st[0].kl, st[0].refusals, st[0].number))
        return LOWEST, [t for _, t in order]
    if policy.selection == GENTLEST:
        gentle = _gentle(scored, policy)
        if gentle:
            return "target", gentle
    return FEWEST, _fewest(scored, policy)


def choose(trials: list[FrozenTrial], policy: Policy) -> Choice | None:
    """The trial the policy takes, with the rule that chose it and why, or None."""
    rule, order = ranked(trials, policy)
    if not order:
        return None
    best = order[0]
    s, n = score(best), TrialRecord.read(best).n_harmful
    figures = f"{s.refusals}/{n} refusals, damage {s.kl:.3g}"
    if rule == "target":
        why = (
            f"the lowest damage among the {len(order)} trials with at most "
            f"{target_count(policy.refusal_target, n)} refusals ({policy.refusal_target:.0%} of "
            f"{n}, refusal_target): trial {s.number}, {figures}"
        )
    elif rule == LOWEST:
        why = f"the lowest damage with at most {policy.refusal_cap} refusals: trial {s.number}, {figures}"
    else:
        missed = (
            f"no trial reached the refusal target ({policy.refusal_target:.0%}), so "
            if policy.selection == GENTLEST
            else ""
        )
        why = (
            f"{missed}the fewest refusals with damage <= {policy.kl_cap:g} (kl_cap): trial "
            f"{s.number}, {figures}"
        )
    return Choice(best, rule, why)


def select(
    trials: list[FrozenTrial],
    policy: str,
    kl_cap: float,
    refusal_cap: int,
    max_refusal_share: float = 1.0,
    refusal_target: float = 0.05,
) -> FrozenTrial | None:
    """The trial the policy takes, or None. fewest-refusals (and gentlest's fallback) also
    refuses a "best" trial that leaves more than max_refusal_share of the prompts refused: a
    model whose refusal was not removed must end as a failure (exit 9), not as a silently bad
    export."""
    found = choose(trials, Policy(policy, kl_cap, refusal_cap, max_refusal_share, refusal_target))
    return found.trial if found else None


def pareto_front(trials: list[FrozenTrial]) -> list[TrialScore]:
    """Trials not dominated in (refusals, damage), sorted by refusals."""
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
    i.e. lower damage, first on ties), so a user can trade refusals for damage with known
    figures."""
    front = [s.number for s in pareto_front(trials)]
    if selected not in front or k <= 0:
        return [n for n in front if n != selected][:k]
    at = front.index(selected)
    others = [(abs(i - at), -i, n) for i, n in enumerate(front) if n != selected]
    return [n for _, _, n in sorted(others)[:k]]


def candidates(trials: list[FrozenTrial], policy: Policy, selected: int, k: int) -> list[int]:
    """The trials to verify next to the selected one: the policy's next best and the nearest
    Pareto-front trials, alternately, up to k (so a choice that only looked best on the search
    prompts can lose on the held-back ones)."""
    _, order = ranked(trials, policy)
    runners = [t.number for t in order if t.number != selected]
    front = front_neighbours(trials, selected, k)
    picked: list[int] = []
    for pair in zip_longest(runners, front):
        for n in pair:
            if n is not None and n not in picked and len(picked) < k:
                picked.append(n)
    return picked
