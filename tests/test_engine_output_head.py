"""The answer damage applies the output head itself (one answer at a time): on architectures that
transform the head's output (Gemma 2's soft-capping, Cohere's logit scale, Granite's logits
scaling) it gives what the model's own full logits give, and a forward that does something the
head does not know falls back to the full logits instead of scoring wrong numbers."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.demo.model import build_tokenizer
from heretic.engine.answer_kl import AnswerKL, Damage
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.loading import LoadedModel, load_model

SHAPE: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=128,
    tie_word_embeddings=False,
)
ARCHITECTURES: dict[str, Callable[[dict[str, Any]], PreTrainedModel]] = {
    # strong transforms, so that leaving one out would change every figure
    "gemma2": lambda kw: Gemma2ForCausalLM(Gemma2Config(**kw, final_logit_softcapping=2.0)),
    "cohere": lambda kw: CohereForCausalLM(CohereConfig(**kw, logit_scale=0.25)),
    "granite": lambda kw: GraniteForCausalLM(GraniteConfig(**kw, logits_scaling=4.0)),
    "llama": lambda kw: LlamaForCausalLM(LlamaConfig(**kw)),
}
PROMPTS = demo_prompts().harmless[:6]


def _build(name: str, folder: Path) -> LoadedModel:
    tokenizer = build_tokenizer()
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = ARCHITECTURES[name]({**SHAPE, **ids})
    with torch.no_grad():  # a peaked head: answers that mean something to a KL
        head = model.get_output_embeddings()
        assert head is not None
        head.weight.mul_(20.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return load_model(Settings(model=str(folder), device_map="cpu", dtype="float32"))


def _edited(loaded: LoadedModel) -> LoadedModel:
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for layer in model.model.layers:
            weight = layer.mlp.down_proj.weight
            weight.add_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    return dataclasses.replace(loaded, model=model)


def _damage(loaded: LoadedModel, edited: LoadedModel, *, full_logits: bool) -> Damage:
    base = AnswerKL(loaded, PROMPTS, chat=ChatFormat(), batcher=Batcher(3), tokens=8)
    if full_logits:
        base._head = None
    base.prepare()
    measure = AnswerKL(edited, PROMPTS, chat=ChatFormat(), batcher=Batcher(3), tokens=8)
    if full_logits:
        measure._head = None
    measure.reference = base.reference
    damage = measure.measure()
    assert (measure._head is None) == full_logits  # the head path held for the whole pass
    return damage


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_head_applied_per_answer_gives_the_models_own_logits(name: str, tmp_path: Path) -> None:
    loaded = _build(name, tmp_path)
    edited = _edited(loaded)
    per_answer = _damage(loaded, edited, full_logits=False)
    full = _damage(loaded, edited, full_logits=True)
    assert full.answer_kl > 1e-3  # the edit is visible, so a wrong transform would show
    torch.testing.assert_close(
        torch.tensor(per_answer.per_prompt), torch.tensor(full.per_prompt), rtol=1e-4, atol=1e-7
    )


def test_a_forward_that_transforms_its_logits_otherwise_falls_back_to_them(
    tmp_path: Path,
) -> None:
    """A model whose forward rescales its logits after the head (as an architecture the head
    does not know would): the check against the forward's own last-position logits fails, and
    the measure uses the full logits, giving the same figures as if it had from the start."""
    loaded = _build("llama", tmp_path)
    edited = _edited(loaded)

    def rescale(_module: torch.nn.Module, _args: Any, output: Any) -> Any:
        output.logits = output.logits * 0.3
        return output

    handles = [m.model.register_forward_hook(rescale) for m in (loaded, edited)]
    try:
        measure = AnswerKL(loaded, PROMPTS, chat=ChatFormat(), batcher=Batcher(3), tokens=8)
        assert measure._head is not None
        measure.prepare()
        assert measure._head is None  # found out on the first batch
        other = AnswerKL(edited, PROMPTS, chat=ChatFormat(), batcher=Batcher(3), tokens=8)
        other.reference = measure.reference
        fallback = other.measure()
        full = _damage(loaded, edited, full_logits=True)
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(
        torch.tensor(fallback.per_prompt), torch.tensor(full.per_prompt), rtol=1e-5, atol=1e-8
    )
