"""Residual capture, directions, batching, selection and refusal classification."""

from __future__ import annotations

import pytest
import torch
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from heretic.config.settings import Settings
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.directions import compute_directions
from heretic.engine.evaluation import is_refusal
from heretic.engine.loading import load_model
from heretic.engine.residuals import collect_residuals
from heretic.engine.selection import pareto_front, select
from heretic.errors import OutOfMemoryError


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    return load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))


def test_hooked_residuals_equal_hidden_states_at_last_token(demo) -> None:
    arch = describe(demo.model, ["attention", "mlp"])
    prompts = ["how do i bake a cake ?", "help me steal a car .", "i want to fix a lamp ."]
    got = collect_residuals(demo, arch, prompts, Batcher(2))
    assert got.shape == (3, arch.num_layers + 1, 64)
    from heretic.engine.chat import ChatFormat, encode

    inputs = encode(demo.tokenizer, prompts, ChatFormat(), demo.device)
    with torch.no_grad():
        hs = demo.model(**inputs, output_hidden_states=True).hidden_states
    # hidden_states[-1] has the final norm applied; the residual before it is what we keep.
    expected = torch.stack([h[:, -1] for h in hs[:-1]], dim=1)
    torch.testing.assert_close(got[:, :-1], expected, rtol=1e-5, atol=1e-5)


def test_projected_directions_are_unit_and_orthogonal_to_harmless_mean() -> None:
    g = torch.Generator().manual_seed(0)
    harmful = torch.randn(40, 4, 16, generator=g) + 2.0
    harmless = torch.randn(40, 4, 16, generator=g)
    d = compute_directions(harmful, harmless, project=True, n_directions=3)
    assert d.basis.shape == (4, 3, 16)
    gram = d.basis @ d.basis.transpose(1, 2)
    torch.testing.assert_close(gram, torch.eye(3).expand(4, 3, 3), atol=1e-4, rtol=0)
    mean_b = torch.nn.functional.normalize(harmless.mean(0), dim=-1)
    assert (d.main * mean_b).sum(-1).abs().max() < 1e-5
    raw = compute_directions(harmful, harmless, project=False)
    expected = torch.nn.functional.normalize(harmful.mean(0) - harmless.mean(0), dim=-1)
    torch.testing.assert_close(raw.main, expected)


def test_contrastive_directions_find_the_extra_harmful_variance() -> None:
    g = torch.Generator().manual_seed(0)
    axis = torch.zeros(16)
    axis[5] = 1.0
    harmless = torch.randn(200, 1, 16, generator=g) * 0.1
    harmful = torch.randn(200, 1, 16, generator=g) * 0.1
    harmful += torch.randn(200, 1, 1, generator=g) * 3.0 * axis  # variance along axis 5 only
    harmful[..., 0] += 1.0  # the mean shift along axis 0
    d = compute_directions(harmful, harmless, project=False, n_directions=2)
    assert abs(float(d.basis[0, 1] @ axis)) > 0.95


def test_batcher_halves_on_out_of_memory_and_keeps_the_size() -> None:
    seen: list[int] = []

    def work(batch, start):
        seen.append(len(batch))
        if len(batch) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test's callback)")
        return list(batch)

    batcher = Batcher(16)
    out = batcher.run(list(range(10)), work)
    assert [x for part in out for x in part] == list(range(10))
    assert batcher.batch_size == 2 and seen[:4] == [10, 5, 2, 2]

    def never(batch, start):
        raise torch.OutOfMemoryError("simulated")

    with pytest.raises(OutOfMemoryError):
        Batcher(4).run([1, 2], never)


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("I\u2019m sorry, I can\u2019t help with that.", True),
        ("I can't do that", True),
        ("", True),
        ("   ", True),
        ("<think>I must refuse? no</think>Sure, here is how.", False),
        ("<think>sorry, I cannot", True),  # still thinking: nothing visible -> empty
        ("Sure! Step one: gather the tools.", False),
    ],
)
def test_refusal_classification(text: str, refusal: bool) -> None:
    markers = [m.lower() for m in Settings().refusal_markers]
    assert is_refusal(text, markers) is refusal


def _trial(number: int, refusals: int, kl: float):
    t = create_trial(
        values=[refusals, kl],
        params={"x": 0.0},
        distributions={"x": FloatDistribution(0, 1)},
        state=TrialState.COMPLETE,
    )
    t.number = number
    return t


def test_selection_policies_and_pareto_front() -> None:
    trials = [_trial(0, 0, 0.9), _trial(1, 2, 0.1), _trial(2, 2, 0.05), _trial(3, 10, 0.01)]
    assert select(trials, "fewest-refusals", 0.5, 5).number == 2
    assert select(trials, "fewest-refusals", 1.0, 5).number == 0
    assert select(trials, "lowest-kl", 0.5, 5).number == 2
    assert select(trials, "lowest-kl", 0.5, 20).number == 3
    assert select(trials, "fewest-refusals", 0.001, 5) is None
    assert [s.number for s in pareto_front(trials)] == [0, 2, 3]


def test_chat_format_passes_system_and_thinking_switch(demo) -> None:
    import copy

    from heretic.engine.chat import ChatFormat, format_chat
    from heretic.run.recipe import chat_format

    tok = copy.deepcopy(demo.tokenizer)
    tok.chat_template = (
        "{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}NOTHINK{% endif %}"
    )
    text = format_chat(tok, "hello", chat_format(Settings(system_prompt="be brief")))
    assert text == "[system] be brief [user] hello NOTHINK"
    assert "NOTHINK" not in format_chat(tok, "hello", chat_format(Settings(thinking=True)))
    assert format_chat(tok, "hi", ChatFormat()) == "[user] hi "


def test_refusal_check_stops_as_soon_as_every_sequence_is_decided(demo) -> None:
    from heretic.demo.data import demo_prompts
    from heretic.engine.chat import ChatFormat
    from heretic.engine.evaluation import Evaluator

    calls = []
    handle = demo.model.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        evaluator = Evaluator(
            demo,
            [],
            demo_prompts().harmful_eval[:8],
            markers=Settings().refusal_markers,
            max_new_tokens=40,
            chat=ChatFormat(),
            batcher=Batcher(8),
        )
        result = evaluator.refusals()
    finally:
        handle.remove()
    assert result.count == 8
    # "i am sorry" holds the marker after 3 tokens: far fewer steps than the 40-token budget.
    assert len(calls) <= 5, len(calls)
    assert all(r.startswith("i am sorry") for r in result.responses)


def test_export_is_sharded_when_asked(demo_model_dir, tmp_path) -> None:
    import json

    from heretic.engine.directions import Directions
    from heretic.engine.export import export_model
    from heretic.engine.parameters import AblationParams, Kernel

    directions = Directions(
        basis=torch.nn.functional.normalize(torch.randn(7, 1, 64), dim=-1),
        harmful_mean=torch.zeros(7, 64),
        harmless_mean=torch.zeros(7, 64),
    )
    params = AblationParams({"mlp": Kernel(1.0, 2.0, 1.0, 1.0)}, "per-layer")
    own = load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))
    target = export_model(
        own, directions, params, Settings(max_shard_size="100KB"), tmp_path / "model"
    )
    shards = sorted(target.glob("*.safetensors"))
    assert len(shards) > 1
    index = json.loads((target / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in shards}
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(target).config.num_hidden_layers == 6


def test_a_full_disk_during_export_is_a_clear_error_and_leaves_nothing(
    demo_model_dir, tmp_path
) -> None:
    import subprocess

    from heretic.engine.directions import Directions
    from heretic.engine.export import export_model
    from heretic.engine.parameters import AblationParams, Kernel
    from heretic.errors import DiskFullError

    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip("a tiny tmpfs cannot be mounted here (needs root)")
    try:
        own = load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))
        directions = Directions(
            basis=torch.nn.functional.normalize(torch.ones(7, 1, 64), dim=-1),
            harmful_mean=torch.zeros(7, 64),
            harmless_mean=torch.zeros(7, 64),
        )
        params = AblationParams({"mlp": Kernel(1.0, 2.0, 1.0, 1.0)}, "per-layer")
        with pytest.raises(DiskFullError) as err:
            export_model(own, directions, params, Settings(), small / "model")
        assert "filled up" in err.value.message
        assert list(small.iterdir()) == []  # no half-written export, and the space is back
    finally:
        subprocess.run(["umount", str(small)], check=False)
