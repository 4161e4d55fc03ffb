"""Mixture-of-experts models: the residual writers are found from the module tree (fused
experts, shared experts, dense first layers), the hooked edit equals the edit folded into every
expert's down projection (and bias), the export reloads with plain transformers, a 4-bit search
folds into a full-precision export, and norm-preserving ablation is refused on MoE layers."""

from __future__ import annotations

import copy

import pytest
import torch
from test_engine_architectures import PARAMS, random_directions
from tiny_models import assert_hooked_equals_folded
from tiny_moe import MOE_ARCHITECTURES, tiny_moe_config, tiny_moe_model

from heretic.config.settings import Settings
from heretic.engine.ablation import Ablator
from heretic.engine.architecture import describe
from heretic.engine.export import export_model, fold
from heretic.engine.parameters import AblationParams, Kernel
from heretic.errors import ConfigError, ExitCode

# (moe layers, dense layers, writers of one MoE layer's mlp component)
EXPECTED = {
    "qwen3_moe": ([0, 1, 2], [], 1),
    "gpt_oss": ([0, 1, 2], [], 1),
    "mixtral": ([0, 1, 2], [], 1),
    "olmoe": ([0, 1, 2], [], 1),
    "granitemoe": ([0, 1, 2], [], 1),
    "glm4_moe": ([1, 2], [0], 2),
    "deepseek_v3": ([1, 2], [0], 2),
    "qwen2_moe": ([1], [0, 2], 2),
}
IDS = torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("model_type", sorted(MOE_ARCHITECTURES))
def test_writers_found_from_the_module_tree(model_type: str) -> None:
    arch = describe(tiny_moe_model(model_type), ["attention", "mlp"])
    moe, dense, parts = EXPECTED[model_type]
    assert arch.moe_layers == moe
    for entry in arch.layers:
        assert type(entry.writers["attention"]).__name__ == "Linear"
        writers = entry.all_writers("mlp")
        if entry.index in dense:
            assert [type(w).__name__ for w in writers] == ["Linear"]
        else:
            assert len(writers) == parts  # fused experts (+ the shared experts' down_proj)
            assert entry.experts[id(writers[0])].num_experts == 4
            assert all(type(w).__name__ == "Linear" for w in writers[1:])


@pytest.mark.parametrize("model_type", sorted(MOE_ARCHITECTURES))
def test_hooked_edit_equals_folded_experts(model_type: str) -> None:
    model = tiny_moe_model(model_type)
    arch = describe(model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32, k=2)
    assert_hooked_equals_folded(model, arch, directions, PARAMS, "standard", IDS)


@pytest.mark.parametrize("model_type", ["qwen3_moe", "gpt_oss"])
def test_full_strength_fold_removes_the_direction_from_every_expert(model_type: str) -> None:
    """Layout check: (E, H, I) for Qwen3-MoE, (E, I, H) plus a bias for gpt-oss."""
    model = tiny_moe_model(model_type)
    arch = describe(model, ["mlp"])
    directions = random_directions(arch.num_layers, 32)
    fold(
        model,
        directions,
        AblationParams({"mlp": Kernel(1.0, 1.0, 1.0, 5.0)}, "per-layer"),
        Settings(components=["mlp"]),
    )
    for entry in arch.layers:
        v = directions.basis[entry.index + 1, 0]
        layout = entry.experts[id(entry.writers["mlp"])]
        down = layout.down.detach()
        along_v = down @ v if layout.transposed else torch.einsum("h,ehi->ei", v, down)
        torch.testing.assert_close(along_v, torch.zeros_like(along_v), atol=1e-5, rtol=0)
        if model_type == "gpt_oss":
            assert layout.bias is not None
            torch.testing.assert_close(layout.bias @ v, torch.zeros(4), atol=1e-5, rtol=0)


def test_norm_preserving_is_refused_on_moe_layers_and_allowed_on_attention() -> None:
    model = tiny_moe_model("glm4_moe")
    arch = describe(model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32)
    with pytest.raises(ConfigError) as err:
        Ablator(arch, directions, "norm-preserving")
    assert err.value.exit_code == ExitCode.CONFIG
    assert "glm4_moe" in err.value.message and "2 of 3 layers" in err.value.message
    assert "--ablation standard" in err.value.hint
    with pytest.raises(ConfigError):
        fold(copy.deepcopy(model), directions, PARAMS[0], Settings(ablation="norm-preserving"))
    attention_only = describe(model, ["attention"])
    ablator = Ablator(attention_only, directions, "norm-preserving").install()
    with torch.no_grad(), ablator.applied(PARAMS[0]):
        hooked = model(IDS).logits
    ablator.remove()
    folded = copy.deepcopy(model)
    fold(
        folded,
        directions,
        PARAMS[0],
        Settings(ablation="norm-preserving", components=["attention"]),
    )
    with torch.no_grad():
        torch.testing.assert_close(folded(IDS).logits, hooked, rtol=1e-4, atol=1e-4)


def test_a_module_not_understood_is_named() -> None:
    model = tiny_moe_model("mixtral")
    layer = model.model.layers[1]
    # A feed-forward block whose output is not the hidden size: neither MLP nor experts.
    layer.mlp = torch.nn.Sequential(torch.nn.Linear(32, 24), torch.nn.Tanh())
    with pytest.raises(Exception) as err:
        describe(model, ["attention", "mlp"])
    assert err.value.exit_code == ExitCode.UNSUPPORTED_ARCHITECTURE
    assert "'mixtral'" in err.value.message and "layer 1" in err.value.message
    assert "'mlp' (Sequential" in err.value.message
    assert describe(model, ["attention"]).num_layers == 3


def _save(model, folder) -> None:
    from heretic.demo.model import build_tokenizer

    model.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)


@pytest.mark.parametrize("model_type", ["qwen3_moe", "gpt_oss", "mixtral", "deepseek_v3"])
def test_export_reloads_with_plain_transformers_and_matches_the_hooks(model_type, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from heretic.engine.loading import load_model

    _save(tiny_moe_model(model_type), tmp_path / "source")
    settings = Settings(model=str(tmp_path / "source"), device_map="cpu", dtype="float32")
    loaded = load_model(settings)
    arch = describe(loaded.model, ["attention", "mlp"])
    directions = random_directions(arch.num_layers, 32)
    ablator = Ablator(arch, directions, "standard").install()
    with torch.no_grad(), ablator.applied(PARAMS[1]):
        hooked = loaded.model(IDS).logits
    ablator.remove()
    target = export_model(loaded, directions, PARAMS[1], settings, tmp_path / "model")
    reloaded = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    assert type(reloaded).__name__ == type(loaded.model).__name__
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, hooked, rtol=1e-4, atol=1e-4)


def test_four_bit_search_folds_into_a_full_precision_export(tmp_path) -> None:
    """bitsandbytes quantizes the linear layers (attention, shared experts, the dense first
    layer) but leaves fused 3-D expert tensors in 16/32 bit; the export folds the same edit into
    a full-precision copy of all of them."""
    from transformers import AutoModelForCausalLM

    from heretic.engine.loading import load_model

    torch.manual_seed(0)
    config = tiny_moe_config("glm4_moe")
    # bitsandbytes' CPU kernels need input widths of at least one 64-wide block.
    config.hidden_size, config.moe_intermediate_size, config.intermediate_size = 64, 64, 128
    config.head_dim = 16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    _save(model, tmp_path / "source")
    q = load_model(
        Settings(
            model=str(tmp_path / "source"),
            device_map="cpu",
            dtype="float32",
            quantization="bnb-4bit",
        )
    )
    arch = describe(q.model, ["attention", "mlp"])
    writers = arch.layers[1].all_writers("mlp")
    assert [type(w).__name__ for w in writers] == ["Glm4MoeExperts", "Linear4bit"]
    assert type(arch.layers[0].writers["mlp"]).__name__ == "Linear4bit"
    directions = random_directions(arch.num_layers, 64)
    with torch.no_grad():
        base = q.model(IDS).logits
    ablator = Ablator(arch, directions, "standard").install()
    with torch.no_grad(), ablator.applied(PARAMS[0]):
        edited = q.model(IDS).logits
    with torch.no_grad():
        torch.testing.assert_close(q.model(IDS).logits, base)
    ablator.remove()
    assert (edited - base).abs().max() > 1e-3

    target = export_model(q, directions, PARAMS[0], Settings(), tmp_path / "model")
    exported = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32).eval()
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "source", dtype=torch.float32)
    fold(reference, directions, PARAMS[0], Settings())
    for (name, a), b in zip(exported.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(
        exported.model.layers[1].mlp.experts.down_proj, model.model.layers[1].mlp.experts.down_proj
    )


@pytest.mark.slow
def test_heretic_run_end_to_end_on_a_moe_model(tmp_path) -> None:
    """The whole pipeline (residuals, hooked trials with generation, selection, verification,
    export) on a tiny random DeepSeek-style model: the exported experts carry the selected edit
    and the folder loads with plain transformers."""
    from transformers import AutoModelForCausalLM

    from heretic.demo.data import demo_prompts
    from heretic.demo.model import build_tokenizer
    from heretic.run.recipe import run
    from heretic.run.study_files import load_directions

    source = tmp_path / "source"
    tokenizer = build_tokenizer()
    _save(
        tiny_moe_model(
            "deepseek_v3",
            vocab_size=len(tokenizer),
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=tokenizer.eos_token_id,
        ),
        source,
    )
    prompts = demo_prompts()
    files = {}
    for key in ("harmful", "harmless", "harmful_eval", "harmless_eval"):
        (tmp_path / f"{key}.txt").write_text("\n".join(getattr(prompts, key)[:8]) + "\n")
        files[f"{key}_prompts"] = str(tmp_path / f"{key}.txt")
    settings = Settings(
        model=str(source),
        output=tmp_path / "out",
        trials=3,
        startup_trials=3,
        device_map="cpu",
        dtype="float32",
        max_response_tokens=4,
        verify_response_tokens=0,
        kl_cap=1e9,
        refusal_markers=["the"],
        **files,
    )
    result = run(settings)
    assert result.report is not None and result.report["architecture"] == "deepseek_v3"
    params = AblationParams.from_dict(result.report["selected"]["parameters"])
    exported = AutoModelForCausalLM.from_pretrained(result.model_dir, dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    directions = load_directions(tmp_path / "out" / "study" / "directions.safetensors")
    assert directions is not None
    experts = [
        (e.mlp.experts.down_proj, r.mlp.experts.down_proj)
        for e, r in zip(exported.model.layers[1:], reference.model.layers[1:], strict=True)
    ]
    assert any(not torch.equal(a, b) for a, b in experts), "the experts must carry the edit"
    fold(reference, directions, params, settings)
    for (name, a), b in zip(exported.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
