"""The search finds the refusal wherever the model keeps it and stops when done: the layer
profile and its prior, objective shaping, patience (and resuming past it), the CPU dtype."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution

from heretic.config.settings import Settings
from heretic.engine.layer_profile import derive_prior, layer_profile
from heretic.engine.objective import shaped_kl
from heretic.engine.patience import StopRule
from heretic.engine.selection import score, select
from heretic.engine.space import FALLBACK_RANGES, SearchSpace
from heretic.engine.study import completed_trials, open_study, run_trials
from heretic.preflight.cpu_dtype import decide


def planted(
    writes: dict[int, float], layers: int = 8, n: int = 48, d: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Residuals (n, L+1, d) of two classes: layer l adds writes[l] * e to the harmful
    prompts' residual (so positions l+1.. carry it), over per-prompt noise that every layer
    also adds to (a random write each), like a real residual stream."""
    gen = torch.Generator().manual_seed(seed)
    feature = torch.nn.functional.normalize(torch.randn(d, generator=gen), dim=0)

    def stream(harmful: bool) -> torch.Tensor:
        x = torch.randn(n, d, generator=gen)
        out = [x]
        for layer in range(layers):
            x = x + 0.5 * torch.randn(n, d, generator=gen)
            if harmful:
                x = x + writes.get(layer, 0.0) * feature
            out.append(x)
        return torch.stack(out, dim=1)

    return stream(True), stream(False)


def layer_of(fraction: float, layers: int) -> float:
    return fraction * (layers - 1)


@pytest.mark.parametrize("writes", [{1: 4.0}, {4: 4.0}, {6: 4.0}, {1: 3.0, 3: 3.0, 5: 3.0, 7: 3.0}])
def test_profile_finds_planted_layers_and_prior_covers_them(writes: dict[int, float]) -> None:
    harmful, harmless = planted(writes)
    profile = layer_profile(harmful, harmless)
    first = min(writes)
    # Before the first write nothing separates (held out, so no in-sample inflation) ...
    assert max(profile.separation[: first + 1]) < 1.0, profile.separation
    # ... from the first written position on, the residual does.
    assert min(profile.separation[first + 1 :]) > 1.5, profile.separation
    strongest = max(writes, key=writes.get)
    assert profile.write_separation[strongest] > 1.5
    prior = derive_prior(profile)
    assert set(writes) <= set(prior.writers), prior
    low, high = prior.max_weight_position
    for layer in writes:
        assert layer_of(low, 8) <= layer <= layer_of(high, 8), (layer, prior)
    # Any peak in the range reaches every planted layer.
    reach = layer_of(prior.min_weight_distance[1], 8)
    assert all(abs(layer - layer_of(p, 8)) <= reach for layer in writes for p in (low, high))
    # The global direction can be taken at the first written position.
    index_low, index_high = prior.direction_index
    position = (first + 1 - 1) / 7  # residual position first+1 as a fraction
    assert index_low <= position <= index_high


def test_no_separation_searches_the_whole_stack() -> None:
    harmful, harmless = planted({})
    prior = derive_prior(layer_profile(harmful, harmless))
    assert prior.max_weight_position == (0.0, 1.0)
    assert prior.direction_index == (0.0, 1.0)


def test_user_ranges_win_over_the_prior() -> None:
    prior = derive_prior(layer_profile(*planted({1: 4.0})))
    mine = Settings(max_weight_position={"low": 0.7, "high": 0.9})
    space = SearchSpace(mine, 8, prior)
    assert space.range_of("max_weight_position") == (0.7, 0.9)
    assert space.range_of("direction_index") == prior.direction_index
    assert SearchSpace(Settings(), 8, None).ranges() == FALLBACK_RANGES


def _trial(number: int, refusals: int, kl: float, shaped_target: float = 0.0):
    return optuna.trial.create_trial(
        values=[float(refusals), shaped_kl(kl, shaped_target)],
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={"kl_divergence": kl, "refusals": refusals},
    )


def test_shaping_raises_the_sampler_value_only() -> None:
    assert shaped_kl(0.0004, 0.01) == 0.01
    assert shaped_kl(0.3, 0.01) == 0.3
    trials = [_trial(0, 3, 0.0004, 0.01), _trial(1, 3, 0.002, 0.01), _trial(2, 5, 0.3, 0.01)]
    for number, t in enumerate(trials):
        t.number = number
    assert trials[0].values[1] == 0.01  # what the sampler sees
    assert [score(t).kl for t in trials] == [0.0004, 0.002, 0.3]  # what everything else reads
    # Selection still prefers the lower real KL among equal refusals.
    assert select(trials, "fewest-refusals", 0.5, 5).number == 0


def _rule(patience: int, target: int = 1) -> StopRule:
    return StopRule(patience, target, "fewest-refusals", 0.5, 5, kl_target=0.01)


def test_patience_stops_exactly_patience_trials_after_the_best() -> None:
    # refusals per trial; the best meeting the target (<= 1) is trial 3 (0 refusals).
    sequence = [9, 7, 1, 0, 4, 0, 2, 5, 0, 3, 8, 6]
    rule = _rule(patience=5)
    trials = []
    stopped_at = None
    for number, refusals in enumerate(sequence):
        t = _trial(number, refusals, 0.02)
        t.number = number
        trials.append(t)
        if rule.reason(trials) is not None:
            stopped_at = number
            break
    assert stopped_at == 3 + 5  # equal refusals at the same KL (trials 5, 8) are no improvement
    assert "trial 3 reached 0 refusals" in rule.reason(trials)
    assert "none of the 5 trials after it did better" in rule.reason(trials)
    assert _rule(0).reason(trials) is None  # off
    assert _rule(5, target=-1).reason(trials) is None  # target never met: run on


def test_patience_counts_a_real_kl_gain_but_not_noise() -> None:
    rule = _rule(patience=2)
    trials = [_trial(0, 0, 0.30), _trial(1, 0, 0.295), _trial(2, 0, 0.1), _trial(3, 0, 0.1)]
    for number, t in enumerate(trials):
        t.number = number
    assert rule.reason(trials[:3]) is None  # trial 2 improved KL by 0.2 > kl_target
    assert rule.reason(trials + [_trial(4, 0, 0.1)]) is not None


def test_unselectable_trials_never_count_as_best() -> None:
    rule = _rule(patience=1)
    trials = [_trial(0, 0, 2.0), _trial(1, 6, 0.1), _trial(2, 6, 0.1)]
    for number, t in enumerate(trials):
        t.number = number
    assert rule.reason(trials) is None  # the only trial at the target is over the KL cap


class ScriptedObjective:
    """A trial objective that returns a fixed sequence (the search machinery is real)."""

    def __init__(self, refusals: list[int]) -> None:
        self.refusals = refusals

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        trial.suggest_float("x", 0.0, 1.0)
        value = self.refusals[trial.number % len(self.refusals)]
        trial.set_user_attr("kl_divergence", 0.02)
        return float(value), 0.02


def test_patience_stops_the_study_and_it_resumes_to_full_trials(tmp_path: Path) -> None:
    def study() -> optuna.Study:
        return open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=3)

    objective = ScriptedObjective([9, 7, 0, 4, 5, 3, 6, 2, 8, 1, 9, 9])
    rule = _rule(patience=4)
    first = study()
    ran = run_trials(
        first, tmp_path, 12, objective, done_early=lambda: rule.reason(completed_trials(first))
    )
    assert ran == 2 + 4 + 1  # best at trial 2, then four without improvement
    assert rule.reason(completed_trials(first)).startswith("patience")
    again = study()  # the same command again: the rule still holds, nothing new runs
    assert (
        run_trials(
            again, tmp_path, 12, objective, done_early=lambda: rule.reason(completed_trials(again))
        )
        == 0
    )
    resumed = study()  # patience off: the study goes on to the full --trials
    assert run_trials(resumed, tmp_path, 12, objective) == 5
    assert [t.number for t in completed_trials(resumed)] == list(range(12))


@pytest.mark.parametrize(
    ("slowdown", "fits", "expected"),
    [
        (9.0, True, "float32"),  # emulated bf16 (the machine): float32
        (0.6, True, "bfloat16"),  # native bf16 (avx512_bf16/AMX): bf16
        (1.1, True, "bfloat16"),  # about even: bf16 halves the RAM
        (9.0, False, "bfloat16"),  # slow, but float32 does not fit the RAM
    ],
)
def test_cpu_dtype_follows_the_measurement(slowdown: float, fits: bool, expected: str) -> None:
    choice = decide(slowdown, ("avx512_bf16",) if slowdown < 1 else (), fits)
    assert choice.dtype == expected
    assert ("slower" if slowdown >= 1 else "faster") in choice.reason()


def test_auto_dtype_on_a_cpu_only_run_is_the_measured_one_and_preflight_says_why() -> None:
    from heretic.preflight.cpu_dtype import check_cpu_dtype, choose_cpu_dtype
    from heretic.preflight.inventory import GpuInventory
    from heretic.preflight.resolve import cpu_dtype_settings

    no_gpu = GpuInventory(gpus=[])
    settings = cpu_dtype_settings(Settings(dtype="auto", device_map="cpu"), no_gpu)
    best = choose_cpu_dtype()
    assert settings.dtype == best.dtype
    check = check_cpu_dtype(settings, 0)
    assert check.name == "CPU dtype" and best.reason() in check.measured
    # An explicit dtype is the user's; a GPU run is not touched.
    assert (
        cpu_dtype_settings(Settings(dtype="float16", device_map="cpu"), no_gpu).dtype == "float16"
    )
    assert check_cpu_dtype(Settings(device_map="cuda:0"), 1) is None


def test_the_first_prior_recorded_in_the_study_is_the_one_every_resume_uses(tmp_path: Path) -> None:
    from heretic.run.study_files import load_layer_profile, save_layer_profile, study_prior

    study = open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=1)
    profile = layer_profile(*planted({1: 4.0}))
    first = derive_prior(profile)
    other = derive_prior(layer_profile(*planted({6: 4.0})))
    assert study_prior(study, first) == first
    reopened = open_study(tmp_path, name="s", storage_url=None, seed=0, startup_trials=1)
    assert study_prior(reopened, other) == first  # a resume or another machine: same space
    save_layer_profile(tmp_path, profile)
    assert load_layer_profile(tmp_path) == profile
