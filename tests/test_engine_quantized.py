"""The search runs on 4-bit weights (bitsandbytes on the CPU): hooks change the output and reset
in O(1), norm-preserving terms come from dequantized weights, and the export folds the same
edit into a full-precision copy that loads with plain transformers."""

from __future__ import annotations

import torch
from test_engine_architectures import random_directions

from heretic.config.settings import Settings
from heretic.engine.ablation import Ablator, dense_weight
from heretic.engine.architecture import describe
from heretic.engine.export import export_model, fold
from heretic.engine.loading import load_model
from heretic.engine.parameters import AblationParams, Kernel

PARAMS = AblationParams({c: Kernel(1.2, 2.0, 0.6, 3.0) for c in ("attention", "mlp")}, "per-layer")


def test_four_bit_search_and_full_precision_export(demo_model_dir, tmp_path) -> None:
    q = load_model(
        Settings(
            model=str(demo_model_dir), device_map="cpu", dtype="float32", quantization="bnb-4bit"
        )
    )
    assert q.quantized
    arch = describe(q.model, ["attention", "mlp"])
    module = arch.layers[0].writers["mlp"]
    assert type(module).__name__ == "Linear4bit"
    assert dense_weight(module).shape == (64, 192)
    directions = random_directions(arch.num_layers, 64)
    ids = torch.tensor([[5, 9, 17, 33, 8]])
    with torch.no_grad():
        base = q.model(ids).logits
    for variant in ("standard", "norm-preserving"):
        ablator = Ablator(arch, directions, variant).install()
        with torch.no_grad(), ablator.applied(PARAMS):
            edited = q.model(ids).logits
        with torch.no_grad():
            torch.testing.assert_close(q.model(ids).logits, base)
        ablator.remove()
        assert (edited - base).abs().max() > 1e-3

    target = export_model(q, directions, PARAMS, Settings(ablation="standard"), tmp_path / "model")
    exported = load_model(Settings(model=str(target), device_map="cpu", dtype="float32"))
    reference = load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))
    fold(reference.model, directions, PARAMS, Settings())
    for a, b in zip(exported.model.parameters(), reference.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
