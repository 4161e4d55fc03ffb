"""The hours estimate of a mixture-of-experts model: a decode step reads the experts its batch
routes to (active parameters at small batches, nearly all at batch 64), and bitsandbytes leaves
fused experts in 16 bit. Uses preflight's real count of the Qwen3-30B-A3B config."""

from __future__ import annotations

from pathlib import Path

import pytest

from heretic.cloud import cost as est
from heretic.cloud.gpu_kinds import gpu_kind
from heretic.preflight.memory import count_parameters

A100 = gpu_kind("A100-80GB")
MOE = count_parameters(str(Path(__file__).parent / "fixtures" / "configs" / "qwen3-30b-a3b"))


def test_small_batches_read_only_the_routed_experts():
    shape = est.RunShape(batch_size=4)
    moe = est.estimate_run(MOE.total, shape, A100, count=MOE)
    dense = est.estimate_run(MOE.total, shape, A100)  # a dense model of the same size
    assert moe.hours < 0.6 * dense.hours
    assert moe.weights_gb == dense.weights_gb == pytest.approx(61.1, abs=0.1)  # every expert loaded


def test_batch_64_reads_nearly_every_expert():
    moe = est.estimate_run(MOE.total, est.RunShape(batch_size=64), A100, count=MOE)
    dense = est.estimate_run(MOE.total, est.RunShape(batch_size=64), A100)
    assert 0.95 * dense.hours < moe.hours <= dense.hours


def test_four_bit_leaves_fused_experts_in_16_bit():
    shape = est.RunShape(quantization="bnb-4bit")
    moe = est.estimate_run(MOE.total, shape, A100, count=MOE)
    assert moe.weights_gb > 0.95 * 2 * MOE.total / 1e9  # not the 0.55 bytes/param of a dense model
    assert est.estimate_run(MOE.total, shape, A100).weights_gb < 17
