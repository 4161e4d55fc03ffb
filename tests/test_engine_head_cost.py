"""Issue 20: no forward pass of heretic's copies the output head once per prompt.

On the CPU, torch's linear of the strided last-position view that `logits_to_keep=1` makes
(`hidden[:, -1:, :]`) goes through `bmm` with the head expanded per batch row when the head's
weight does not require grad, in 16-bit dtypes: batch x vocabulary x hidden x 2 bytes per
forward (2.5 GB for 8 prompts on a 262k vocabulary). The model here is built in the test: a
65,536-token vocabulary with a 16 MB bf16 head and a few hundred KB of other weights, loaded
by heretic's own loader. The measure is bytes allocated (torch's profiler), not time: the
expansion allocates 8 x the head's size for 8 prompts, the fixed pass a few logits rows.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from heretic.config.settings import Settings
from heretic.demo.data import demo_prompts
from heretic.demo.model import build_tokenizer
from heretic.engine.answer_kl import AnswerKL
from heretic.engine.architecture import describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode
from heretic.engine.evaluation import Evaluator
from heretic.engine.loading import LoadedModel, load_model
from heretic.engine.residuals import collect_residuals

VOCAB = 65536
HIDDEN = 128
HEAD_BYTES = VOCAB * HIDDEN * 2  # bf16


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("large-vocab")
    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(model_dir: Path) -> LoadedModel:
    return load_model(Settings(model=str(model_dir), device_map="cpu", dtype="bfloat16"))


def allocated_bytes(fn: Callable[[], object]) -> int:
    """Bytes the CPU allocator handed out while `fn` ran (every op's own allocations, summed;
    frees are not subtracted, so a transient copy counts in full)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return sum(max(0, event.self_cpu_memory_usage) for event in prof.events())


def peak_bytes(fn: Callable[[], object]) -> int:
    """The most the CPU allocator held at once above what it held when `fn` started (allocations
    and frees replayed in the order they happened)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    held = peak = 0
    events = [e for e in prof.events() if e.self_cpu_memory_usage]
    for event in sorted(events, key=lambda e: e.time_range.start):
        held += event.self_cpu_memory_usage
        peak = max(peak, held)
    return peak


def prompts(n: int) -> list[str]:
    return demo_prompts().harmless[:n]


def residual_pass(loaded: LoadedModel, n: int) -> Callable[[], object]:
    arch = describe(loaded.model, ["attention", "mlp"])
    return lambda: collect_residuals(loaded, arch, prompts(n), Batcher(n))


def kl_pass(loaded: LoadedModel, n: int) -> Callable[[], object]:
    evaluator = Evaluator(
        loaded,
        prompts(n),
        [],
        markers=["sorry"],
        max_new_tokens=1,
        chat=ChatFormat(),
        batcher=Batcher(n),
    )
    return evaluator.first_token_logprobs


def generation(loaded: LoadedModel, n: int) -> Callable[[], object]:
    evaluator = Evaluator(
        loaded,
        [],
        prompts(n),
        markers=["sorry"],
        max_new_tokens=1,
        chat=ChatFormat(),
        batcher=Batcher(n),
    )
    return lambda: evaluator.generate(prompts(n), stop_at_markers=False)


PASSES = {"residuals": residual_pass, "kl": kl_pass, "generation": generation}


@pytest.mark.parametrize("name", sorted(PASSES))
def test_a_batch_of_8_never_allocates_a_copy_of_the_head(loaded: LoadedModel, name: str) -> None:
    make = PASSES[name]
    make(loaded, 8)()  # warm up (lazy allocations of the first call)
    one = allocated_bytes(make(loaded, 1))
    eight = allocated_bytes(make(loaded, 8))
    # The expansion alone is 8 x the head; the real pass is far below one head.
    assert eight < HEAD_BYTES, f"{name}: {eight / 2**20:.1f} MiB for 8 prompts"
    # Growth with the batch: logits rows (bf16, and float32 for the log-probs and the sampler)
    # and activations, never a head-sized tensor per prompt (which would be 2 x HIDDEN bytes
    # per prompt per vocabulary entry).
    per_prompt_per_token = (eight - one) / 7 / VOCAB
    assert per_prompt_per_token < 32, f"{name}: {per_prompt_per_token:.1f} bytes"


def test_the_residual_pass_costs_what_a_plain_transformers_forward_costs(
    loaded: LoadedModel, model_dir: Path
) -> None:
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    inputs = encode(loaded.tokenizer, prompts(8), ChatFormat(), torch.device("cpu"))

    def plain_forward() -> object:
        with torch.inference_mode():
            return plain(**inputs, use_cache=False, logits_to_keep=1).logits

    plain_forward()
    residual_pass(loaded, 8)()
    reference = allocated_bytes(plain_forward)
    heretic = allocated_bytes(residual_pass(loaded, 8))
    # The residual pass adds only its (L+1) x hidden float32 copies per prompt.
    assert heretic < 1.5 * reference + 2**20, (heretic, reference)


ANSWER_TOKENS = 32


def answer_pass(loaded: LoadedModel, n: int) -> Callable[[], object]:
    measure = AnswerKL(
        loaded, prompts(n), chat=ChatFormat(), batcher=Batcher(n), tokens=ANSWER_TOKENS
    )
    measure.prepare()
    assert int(measure.reference.answer_len.min()) == ANSWER_TOKENS  # never says its end token
    return measure.measure


def test_the_answer_damage_pass_never_holds_batch_x_answer_x_vocabulary_logits(
    loaded: LoadedModel,
) -> None:
    """The teacher-forced pass scores n answer positions per prompt: the model's own forward
    would hold B x n x V logits (8 x 32 x 65,536 in bf16: 32 MiB) and their float32 copies.
    Applied one answer at a time, the pass grows with the batch only by what a last-position
    pass does (the forward's own logits of one position per prompt)."""
    answer_pass(loaded, 8)()  # warm up
    one = peak_bytes(answer_pass(loaded, 1))
    eight = peak_bytes(answer_pass(loaded, 8))
    per_prompt = (eight - one) / 7
    answer_logits = ANSWER_TOKENS * VOCAB * 2  # one prompt's bf16 answer logits
    assert per_prompt < answer_logits / 4, f"{per_prompt / 2**20:.2f} MiB per prompt"
    # And the peak is a few answer rows, whatever the batch.
    assert eight < 4 * ANSWER_TOKENS * VOCAB * (2 + 4 + 4), f"{eight / 2**20:.1f} MiB"
