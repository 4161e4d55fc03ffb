"""The answer-prefix damage measure: alignment, exactness against a brute-force KL, the bucketed
lower bound, and the reference file in the study folder."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from heretic.config.settings import Settings
from heretic.engine.answer_kl import REFERENCE_FILE, AnswerKL
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import LoadedModel, load_model
from heretic.errors import StudyError

PROMPTS = [
    "how do i bake a cake ?",
    "what is a good name for a cat ?",
    "i want to fix a lamp .",
    "tell me about the sea .",
    "how do i plant a tree ?",
]


@pytest.fixture(scope="module")
def demo(demo_model_dir) -> LoadedModel:
    return load_model(Settings(model=str(demo_model_dir), device_map="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def edited(demo) -> LoadedModel:
    """The demo model with its last MLP changed: an edit whose damage is known to be > 0."""
    model = copy.deepcopy(demo.model)
    with torch.no_grad():
        weight = model.model.layers[-1].mlp.down_proj.weight
        weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    return dataclasses.replace(demo, model=model)


def _measure(loaded: LoadedModel, base: AnswerKL, **kwargs) -> AnswerKL:
    """An AnswerKL over `loaded` that uses `base`'s reference."""
    other = AnswerKL(loaded, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), **kwargs)
    other.reference = base.reference
    return other


def _brute_force(base: LoadedModel, edited: LoadedModel, measure: AnswerKL) -> list[float]:
    """Full-vocabulary KL along each answer, one prompt at a time (no padding, all logits)."""
    ref = measure.reference
    assert ref is not None
    out = []
    for i, prompt in enumerate(PROMPTS):
        n = int(ref.answer_len[i])
        prompt_ids = encode(base.tokenizer, [prompt], ChatFormat(), base.device)["input_ids"]
        ids = torch.cat([prompt_ids, ref.answer_ids[i : i + 1, : n - 1]], dim=1)
        with torch.no_grad():
            p = torch.log_softmax(base.model(ids).logits[0, -n:].float(), -1)
            q = torch.log_softmax(edited.model(ids).logits[0, -n:].float(), -1)
        out.append(float((p.exp() * (p - q)).sum(-1).mean()))
    return out


def test_reference_is_the_greedy_answer_and_the_base_model_scores_zero(demo) -> None:
    measure = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), tokens=12)
    ref = measure.prepare()
    assert ref.answer_ids.shape == (5, 12) and ref.top_idx.shape[:2] == (5, 12)
    assert ((ref.answer_len >= 1) & (ref.answer_len <= 12)).all()
    # Teacher forcing is aligned with generation: at every counted position the base model's
    # most likely token is the token its greedy answer holds there.
    valid = torch.arange(12)[None, :] < ref.answer_len[:, None]
    assert torch.equal(ref.top_idx[..., 0][valid], ref.answer_ids[valid])
    damage = measure.measure()
    assert damage.answer_kl < 1e-6 and damage.first_token_kl < 1e-6
    assert len(damage.per_prompt) == 5
    assert measure.unchanged() == [True] * 5  # the base model gives its own answers again


def test_answer_kl_equals_a_brute_force_kl_when_k_covers_the_vocabulary(demo, edited) -> None:
    base = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), top_k=1000)
    base.prepare()
    damage = _measure(edited, base, top_k=1000).measure()
    expected = _brute_force(demo, edited, base)
    assert damage.answer_kl > 1e-4  # the edit is visible
    torch.testing.assert_close(
        torch.tensor(damage.per_prompt), torch.tensor(expected), rtol=1e-3, atol=1e-6
    )
    # The figure the search optimises is the mean of the per-prompt figures, and it inherits
    # their tolerance (CPU kernels differ in summation order between machines).
    assert damage.answer_kl == pytest.approx(sum(damage.per_prompt) / 5, rel=1e-6)
    assert damage.answer_kl == pytest.approx(sum(expected) / len(expected), rel=1e-3, abs=1e-6)
    # A changed greedy answer flipped an argmax along the base answer: its KL cannot be ~0.
    same = _measure(edited, base, top_k=1000).unchanged()
    assert len(same) == 5
    assert all(kl > 1e-4 for kl, kept in zip(damage.per_prompt, same, strict=True) if not kept)


def test_first_token_kl_is_the_evaluators_first_token_kl(demo, edited) -> None:
    base = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), top_k=1000)
    base.prepare()
    first = _measure(edited, base, top_k=1000).measure().first_token_kl

    def evaluator(loaded: LoadedModel) -> Evaluator:
        return Evaluator(
            loaded,
            PROMPTS,
            [],
            markers=[],
            max_new_tokens=4,
            chat=ChatFormat(),
            batcher=Batcher(2),
        )

    ev = evaluator(demo)
    ev.compute_base()
    ev.loaded = edited
    assert first == pytest.approx(ev.kl_divergence(), rel=1e-3, abs=1e-6)


def test_a_small_top_k_gives_a_lower_bound_close_to_the_full_kl(demo, edited) -> None:
    full = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), top_k=1000)
    full.prepare()
    small = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), top_k=8)
    small.prepare()
    exact = _measure(edited, full, top_k=1000).measure().answer_kl
    bound = _measure(edited, small, top_k=8).measure().answer_kl
    assert 0 < bound <= exact * (1 + 1e-5)
    assert bound > 0.5 * exact


def test_reference_file_is_reused_and_a_bad_one_is_a_study_error(demo, tmp_path) -> None:
    first = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), tokens=6)
    ref = first.prepare(tmp_path)
    path = tmp_path / REFERENCE_FILE
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    written = path.stat().st_mtime_ns
    again = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(3), tokens=6)
    loaded = again.prepare(tmp_path)
    assert path.stat().st_mtime_ns == written  # read, not rebuilt
    assert torch.equal(loaded.answer_ids, ref.answer_ids)
    assert torch.equal(loaded.top_logp, ref.top_logp)

    other = AnswerKL(demo, PROMPTS, chat=ChatFormat(), batcher=Batcher(2), tokens=7)
    with pytest.raises(StudyError) as err:
        other.prepare(tmp_path)
    assert "damage_tokens" in err.value.paragraph() and err.value.exit_code == 14

    path.write_bytes(path.read_bytes()[:100])  # a torn file
    with pytest.raises(StudyError) as err:
        again.prepare(tmp_path)
    assert "cannot be read" in err.value.paragraph() and REFERENCE_FILE in err.value.paragraph()
