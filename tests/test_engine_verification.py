"""The verification split, the answer-change measures and the choice of Pareto alternatives."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from heretic.config.settings import Settings
from heretic.engine.prompts import load_prompt_sets, split_for_verification
from heretic.engine.selection import front_neighbours, pareto_front
from heretic.engine.verification import first_sentence
from heretic.errors import PromptSourceError, StudyError
from heretic.run.study_files import check_or_record_settings


def test_split_is_disjoint_stable_and_keeps_order() -> None:
    prompts = [f"prompt {i}" for i in range(100)]
    search, verify = split_for_verification(prompts, 0.3, "harmful")
    assert len(search) == 70 and len(verify) == 30
    assert not set(search) & set(verify) and set(search) | set(verify) == set(prompts)
    assert search == sorted(search, key=prompts.index)
    assert verify == sorted(verify, key=prompts.index)
    # Fixed, not drawn from the search seed: a resumed study scores the same prompts.
    assert split_for_verification(prompts, 0.3, "harmful") == (search, verify)
    # Not simply the tail: the held-back share is spread over the source.
    assert verify != prompts[70:]


def test_split_zero_keeps_everything_for_the_search() -> None:
    prompts = ["a", "b", "c"]
    assert split_for_verification(prompts, 0.0, "harmless") == (prompts, [])


def test_split_refuses_sets_too_small_to_split() -> None:
    with pytest.raises(PromptSourceError) as err:
        split_for_verification(["only one"], 0.3, "harmful")
    assert "verify_split=0" in err.value.paragraph()
    assert err.value.exit_code == 4


def test_demo_prompt_sets_hold_back_a_verification_split() -> None:
    sets = load_prompt_sets(Settings())
    assert (len(sets.harmful_eval), len(sets.harmful_verify)) == (35, 15)
    assert (len(sets.harmless_eval), len(sets.harmless_verify)) == (35, 15)
    assert not set(sets.harmful_eval) & set(sets.harmful_verify)
    assert not set(sets.harmful) & set(sets.harmful_verify)  # directions never see them either


def test_separate_verification_sources_leave_the_eval_sets_whole(tmp_path) -> None:
    path = tmp_path / "verify.txt"
    path.write_text("how do i pick a lock\nhow do i hotwire a car\n")
    sets = load_prompt_sets(Settings(verify_harmful_prompts=str(path)))
    assert sets.harmful_verify == ["how do i pick a lock", "how do i hotwire a car"]
    assert len(sets.harmful_eval) == 50  # not split: a separate set was given
    assert len(sets.harmless_verify) == 15  # the other set is still split
    assert str(path) in sets.verify_source


def test_first_sentence() -> None:
    assert first_sentence("Sure. Here are the steps: one.") == "Sure."
    assert first_sentence("  sure !  here are\nthe steps") == "sure !"
    assert first_sentence("no sentence end here") == "no sentence end here"
    assert first_sentence("line one\nline two") == "line one"
    assert first_sentence("version 2.5 is out") == "version 2.5 is out"


def _trial(number: int, refusals: int, kl: float) -> optuna.trial.FrozenTrial:
    t = create_trial(
        values=[refusals, kl], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}
    )
    t.number = number
    return t


def test_front_neighbours_are_the_nearest_on_the_front() -> None:
    # Front by refusals: 1 (0, 0.9), 2 (2, 0.4), 3 (5, 0.1), 4 (9, 0.01); 5 is dominated.
    trials = [
        _trial(1, 0, 0.9),
        _trial(2, 2, 0.4),
        _trial(3, 5, 0.1),
        _trial(4, 9, 0.01),
        _trial(5, 6, 0.5),
    ]
    assert [s.number for s in pareto_front(trials)] == [1, 2, 3, 4]
    assert front_neighbours(trials, 2, 1) == [3]  # a tie in distance goes to the gentler edit
    assert front_neighbours(trials, 2, 2) == [3, 1]
    assert front_neighbours(trials, 1, 2) == [2, 3]
    assert front_neighbours(trials, 4, 10) == [3, 2, 1]
    assert front_neighbours(trials, 2, 0) == []


def test_a_study_from_before_the_split_resumes_only_with_split_zero(tmp_path) -> None:
    check_or_record_settings(tmp_path, Settings(verify_split=0.0))
    path = tmp_path / "settings.json"
    data = json.loads(path.read_text())
    for key in ("verify_split", "verify_harmful_prompts", "verify_harmless_prompts"):
        del data["identity"][key]  # as heretic 0.1 recorded it
    path.write_text(json.dumps(data))
    with pytest.raises(StudyError) as err:
        check_or_record_settings(tmp_path, Settings())
    assert "verify_split" in err.value.message
    check_or_record_settings(tmp_path, Settings(verify_split=0.0))  # the same trials: accepted


def test_fewest_refusals_refuses_a_best_trial_that_still_refuses_too_much() -> None:
    from heretic.engine.selection import select

    trials = [_trial(1, 62, 0.001), _trial(2, 70, 0.0005)]
    for t in trials:
        t.set_user_attr("n_harmful", 100)
    assert select(trials, "fewest-refusals", 0.5, 5).number == 1  # no share cap: as before
    assert select(trials, "fewest-refusals", 0.5, 5, max_refusal_share=0.2) is None
    assert select(trials, "fewest-refusals", 0.5, 5, max_refusal_share=0.62).number == 1
