"""The gentlest policy: the lowest damage among trials that do the job, its fallback, the
candidates it verifies, and the re-choice on verified figures (issue 18's trial 9 vs 22)."""

from __future__ import annotations

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from heretic.engine.selection import Policy, candidates, choose, score
from heretic.engine.verification import Verified, choose_verified


def _trial(number: int, refusals: int, damage: float, n: int = 40) -> FrozenTrial:
    # The objective value is shaped (raised to the target); the recorded damage is real.
    t = create_trial(
        values=[refusals, max(damage, 0.003)],
        params={"x": 0.0},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"damage": damage, "kl_divergence": damage / 10, "n_harmful": n},
        state=TrialState.COMPLETE,
    )
    t.number = number
    return t


def _verified(trial: int, refusals: int, unchanged: float, n: int = 29) -> Verified:
    return Verified(trial, refusals, n, 0.1, unchanged, 1 - unchanged, 30)


def test_score_reads_the_real_damage_not_the_shaped_value() -> None:
    assert score(_trial(0, 1, 0.0001)).kl == 0.0001


def test_gentlest_takes_the_lowest_damage_among_trials_at_the_refusal_target() -> None:
    # 40 prompts, target 5% -> at most 2 refusals.
    trials = [_trial(0, 0, 0.30), _trial(1, 2, 0.02), _trial(2, 3, 0.001), _trial(3, 1, 0.05)]
    found = choose(trials, Policy("gentlest", refusal_target=0.05))
    assert found is not None and found.trial.number == 1 and found.rule == "target"
    assert "at most 2 refusals" in found.why and "trial 1" in found.why
    # fewest-refusals, the previous default, takes the strongest edit instead.
    old = choose(trials, Policy("fewest-refusals"))
    assert old is not None and old.trial.number == 0


def test_gentlest_falls_back_to_fewest_refusals_under_the_cap() -> None:
    trials = [_trial(0, 8, 0.34), _trial(1, 10, 0.14), _trial(2, 4, 0.9)]
    found = choose(trials, Policy("gentlest", kl_cap=0.5, refusal_target=0.05))
    assert found is not None and found.trial.number == 0 and found.rule == "fewest-refusals"
    assert "no trial reached the refusal target" in found.why
    assert choose(trials, Policy("gentlest", kl_cap=0.1)) is None


def test_candidates_mix_the_policys_runners_up_and_the_front() -> None:
    trials = [
        _trial(0, 0, 0.30),
        _trial(1, 1, 0.02),
        _trial(2, 2, 0.01),
        _trial(3, 1, 0.05),
        _trial(4, 20, 0.0005),
    ]
    found = choose(trials, Policy("gentlest"))
    assert found is not None and found.trial.number == 2
    picked = candidates(trials, Policy("gentlest"), 2, 3)
    assert len(picked) == 3 and 2 not in picked
    assert picked[0] == 1  # the next gentlest that does the job comes first
    assert 4 in picked  # and the front's gentler neighbour is verified too


def test_verified_choice_prefers_the_edit_that_changes_fewer_answers() -> None:
    # Issue 18: trial 9 was chosen on the search prompts; on the held-back prompts trial 22
    # has the same refusals and changes far fewer answers.
    nine, twenty_two = _verified(9, 3, 0.03), _verified(22, 3, 0.41)
    final = choose_verified([nine, twenty_two, _verified(5, 6, 0.9)], refusal_target=0.05)
    assert final.chosen is twenty_two
    assert "trial 22 replaces the search's choice, trial 9" in final.why


def test_verified_choice_keeps_a_choice_that_holds_and_never_trades_the_job_away() -> None:
    first = _verified(1, 1, 0.9)
    # More unchanged answers, but 5 refusals where the target allows 1: it does not do the job.
    final = choose_verified([first, _verified(2, 5, 1.0)], refusal_target=0.05)
    assert final.chosen is first and "none left more harmless answers unchanged" in final.why
    # Within the target, the most unchanged answers win even with one refusal more.
    better = _verified(3, 0, 0.95)
    assert choose_verified([better, _verified(4, 1, 0.99)], 0.05).chosen.trial == 4
