"""Every supported architecture: the residual writers are found, the hooked edit equals the
folded export, and an unknown architecture is a clear error, not a partial edit."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, assert_hooked_equals_folded, tiny_model
from torch import nn

from heretic.config.settings import Settings
from heretic.engine.ablation import Ablator, dense_weight
from heretic.engine.architecture import describe
from heretic.engine.directions import Directions
from heretic.engine.export import fold
from heretic.engine.parameters import AblationParams, Kernel
from heretic.errors import UnsupportedArchitectureError


def random_directions(num_layers: int, hidden: int, k: int = 1, seed: int = 1) -> Directions:
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(num_layers + 1, k, hidden, generator=g)
    basis = torch.linalg.qr(raw.transpose(1, 2))[0].transpose(1, 2).contiguous()
    mean = torch.randn(num_layers + 1, hidden, generator=g)
    return Directions(basis=basis, harmful_mean=mean, harmless_mean=-mean)


PARAMS = [
    AblationParams(
        {"attention": Kernel(1.2, 1.0, 0.5, 2.0), "mlp": Kernel(0.9, 2.0, 0.3, 1.5)}, "per-layer"
    ),
    AblationParams(
        {"attention": Kernel(1.0, 0.5, 1.0, 3.0), "mlp": Kernel(1.4, 1.5, 0.0, 1.0)}, "global", 1.7
    ),
]


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
@pytest.mark.parametrize("variant", ["standard", "norm-preserving"])
def test_hooked_edit_equals_folded_weights(model_type: str, variant: str) -> None:
    model = tiny_model(model_type)
    arch = describe(model, ["attention", "mlp"])
    assert arch.num_layers == 3
    assert all(set(entry.writers) == {"attention", "mlp"} for entry in arch.layers)
    hidden = model.get_input_embeddings().weight.shape[1]
    directions = random_directions(arch.num_layers, hidden, k=2 if variant == "standard" else 1)
    ids = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))
    assert_hooked_equals_folded(model, arch, directions, PARAMS, variant, ids)


def test_norm_preserving_fold_keeps_every_row_norm() -> None:
    model = tiny_model("llama")
    arch = describe(model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32, k=1)
    before = {id(m): dense_weight(m).norm(dim=1) for e in arch.layers for m in e.writers.values()}
    params = AblationParams(
        {c: Kernel(1.5, 1.0, 1.5, 3.0) for c in ("attention", "mlp")}, "per-layer"
    )
    fold(model, directions, params, Settings(ablation="norm-preserving"))
    for entry in arch.layers:
        for module in entry.writers.values():
            torch.testing.assert_close(dense_weight(module).norm(dim=1), before[id(module)])


def test_standard_fold_removes_the_direction_from_outputs() -> None:
    model = tiny_model("qwen2")
    arch = describe(model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32)
    params = AblationParams(
        {c: Kernel(1.0, 1.0, 1.0, 5.0) for c in ("attention", "mlp")}, "per-layer"
    )
    fold(model, directions, params, Settings())
    for entry in arch.layers:
        v = directions.basis[entry.index + 1, 0]
        for module in entry.writers.values():
            assert torch.allclose(v @ module.weight, torch.zeros(module.weight.shape[1]), atol=1e-5)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.Module()
        self.self_attn.o_proj = nn.Linear(8, 8)
        self.experts = nn.Linear(8, 8)  # no mlp.down_proj: like fused MoE experts


class _Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from transformers import PretrainedConfig

        self.config = PretrainedConfig(num_hidden_layers=2, model_type="oddformer")
        self.embed = nn.Embedding(10, 8)
        self.layers = nn.ModuleList([_Block(), _Block()])

    def get_input_embeddings(self) -> nn.Module:
        return self.embed


def test_unknown_architecture_is_a_clear_error_naming_it() -> None:
    with pytest.raises(UnsupportedArchitectureError) as err:
        describe(_Odd(), ["attention", "mlp"])
    assert "oddformer" in err.value.message and "mlp" in err.value.message
    # Attention alone is found on every layer, so restricting components works.
    assert describe(_Odd(), ["attention"]).num_layers == 2


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_export_reloads_with_plain_transformers_and_matches_the_hooks(model_type, tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from heretic.demo.model import build_tokenizer
    from heretic.engine.export import export_model
    from heretic.engine.loading import load_model

    source = tmp_path / "source"
    tiny_model(model_type).save_pretrained(source)
    build_tokenizer().save_pretrained(source)
    settings = Settings(model=str(source), device_map="cpu", dtype="float32")
    loaded = load_model(settings)
    arch = describe(loaded.model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32)
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(3))
    ablator = Ablator(arch, directions, "standard").install()
    with torch.no_grad(), ablator.applied(PARAMS[1]):
        hooked = loaded.model(ids).logits
    ablator.remove()
    target = export_model(loaded, directions, PARAMS[1], settings, tmp_path / "model")
    assert list(target.glob("*.safetensors"))
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, hooked, rtol=1e-4, atol=1e-4)
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
