"""The rough hours/cost estimate is a pure function: checked directly, with numbers."""

from __future__ import annotations

import sys
import types

import pytest

from heretic.cloud import cost as est
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.errors import CloudError

A100 = gpu_kind("A100-80GB")
H100 = gpu_kind("H100-80GB")
RTX = gpu_kind("rtx_4090")


def test_8b_on_an_a100_is_under_an_hour_and_fits():
    e = est.estimate_run(8_030_000_000, est.RunShape(), A100)
    # 16.06 GB per step / 1935 GB/s = 8.3 ms; 200 trials x 100 steps / 0.25 = 689 s;
    # plus 107 s download, 321 s export+upload, 600 s start.
    assert e.hours == pytest.approx(0.48, abs=0.02)
    assert e.weights_gb == pytest.approx(16.1) and e.fits
    assert e.cost(1.5) == pytest.approx(0.72, abs=0.04)
    assert e.cost(None) is None


def test_grows_with_size_and_trials_and_shrinks_with_bandwidth():
    base = est.estimate_run(8_000_000_000, est.RunShape(), A100).hours
    assert est.estimate_run(70_000_000_000, est.RunShape(), A100).hours > 4 * base
    assert est.estimate_run(8_000_000_000, est.RunShape(trials=400), A100).hours > base
    assert est.estimate_run(8_000_000_000, est.RunShape(), H100).hours < base


def test_smaller_batches_mean_more_steps():
    big = est.estimate_run(8_000_000_000, est.RunShape(batch_size=64), A100).hours
    small = est.estimate_run(8_000_000_000, est.RunShape(batch_size=8), A100).hours
    assert small > 2 * big - 0.5


def test_quantization_fits_a_big_model_on_a_small_card():
    shape4 = est.RunShape(quantization="bnb-4bit")
    assert not est.estimate_run(32_000_000_000, est.RunShape(), RTX).fits
    assert est.estimate_run(32_000_000_000, shape4, A100).weights_gb == pytest.approx(17.6)
    assert not est.estimate_run(70_000_000_000, est.RunShape(), A100).fits


def test_disk_holds_cache_and_export():
    assert est.disk_for_params(8_000_000_000) == 70  # 16 GB x 2 + 30, up to 10
    assert est.disk_for_params(70_000_000_000) == 310


def test_rejects_nonsense():
    with pytest.raises(ValueError):
        est.estimate_run(0, est.RunShape(), A100)


def test_shape_from_settings_uses_profile_batch_values():
    shape = est.shape_from_settings(
        {
            "batch_size": 16,
            "trials": 50,
            "max_response_tokens": 32,
            "quantization": "bnb-4bit",
            "device_map": "auto",
        }
    )
    assert (shape.batch_size, shape.trials, shape.max_response_tokens, shape.quantization) == (
        16,
        50,
        32,
        "bnb-4bit",
    )
    assert est.shape_from_settings({}).batch_size == 64  # auto batch: the upper bound
    assert est.shape_for_profile("auto", trials=10).trials == 10


def test_unknown_profile_is_a_cloud_error():
    with pytest.raises(CloudError, match="does not exist"):
        est.shape_for_profile("no-such-profile-xyz")


def test_parameter_count_through_preflight(monkeypatch):
    calls = []

    def count_parameters(model, revision=None, trust_remote_code=False):
        calls.append((model, revision))
        return types.SimpleNamespace(total=8_030_261_248)

    module = types.ModuleType("heretic.preflight.memory")
    module.count_parameters = count_parameters
    monkeypatch.setitem(sys.modules, "heretic.preflight.memory", module)
    assert est.count_model_parameters("org/m", "main") == 8_030_261_248
    assert calls == [("org/m", "main")]


def test_missing_counter_is_a_clear_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "heretic.preflight.memory", None)
    with pytest.raises(CloudError, match="not available"):
        est.count_model_parameters("org/m")
