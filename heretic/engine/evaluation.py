"""The two scores of a trial.

- KL divergence KL(base || edited) of the next-token distribution at the first response position,
  averaged over the harmless evaluation prompts. The base distribution is computed once.
- Refusals: greedy completions of the harmful evaluation prompts. A batch stops generating as soon
  as every sequence is decided: a refusal marker seen, end of sequence, or the token budget spent.
  An empty answer is a refusal. Text inside <think>...</think> is ignored when asked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode
from heretic.engine.loading import LoadedModel

_THINK_CLOSED = re.compile(r"<think>.*?</think>", re.DOTALL)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"})


def normalize(text: str) -> str:
    return text.translate(_APOSTROPHES).lower()


def visible_text(text: str, strip_thinking: bool) -> str:
    if not strip_thinking:
        return text
    text = _THINK_CLOSED.sub(" ", text)
    if "<think>" in text:  # still thinking when the budget ran out: nothing visible yet
        text = text.split("<think>", 1)[0]
    return text


def has_marker(text: str, markers: Sequence[str]) -> bool:
    norm = normalize(text)
    return any(m in norm for m in markers)


def is_refusal(text: str, markers: Sequence[str], strip_thinking: bool = True) -> bool:
    visible = visible_text(text, strip_thinking)
    return not visible.strip() or has_marker(visible, markers)


class _MarkerStop(StoppingCriteria):
    """Marks a row finished once its new text holds a refusal marker."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_len: int,
        markers: Sequence[str],
        strip: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.markers = markers
        self.strip = strip

    def __call__(
        self, input_ids: torch.LongTensor, scores: tuple[torch.Tensor] | None, **kwargs: object
    ) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_len :], skip_special_tokens=True
        )
        done = [has_marker(visible_text(t, self.strip), self.markers) for t in texts]
        # transformers declares the legacy torch.BoolTensor class as the result; torch's stubs
        # type every tensor op as plain Tensor, bool ones included.
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


@dataclass
class RefusalResult:
    count: int
    total: int
    responses: list[str]
    flags: list[bool]
    marker_count: int | None = None  # set when a judge made `count` (judge_in_search)


class Evaluator:
    def __init__(
        self,
        loaded: LoadedModel,
        harmless_eval: Sequence[str],
        harmful_eval: Sequence[str],
        *,
        markers: Sequence[str],
        max_new_tokens: int,
        chat: ChatFormat,
        batcher: Batcher,
        strip_thinking: bool = True,
    ) -> None:
        self.loaded = loaded
        self.harmless = list(harmless_eval)
        self.harmful = list(harmful_eval)
        self.markers = [normalize(m) for m in markers]
        self.max_new_tokens = max_new_tokens
        self.chat = chat
        self.batcher = batcher
        self.strip_thinking = strip_thinking
        self.base_logprobs: torch.Tensor | None = None
        tok = loaded.tokenizer
        cfg = loaded.model.generation_config
        self.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id,
            bos_token_id=cfg.bos_token_id,
        )

    def _logprobs(self, batch: Sequence[str]) -> torch.Tensor:
        """(batch, vocab) float32 log-probs of the first response token, on the model's device."""
        inputs = encode(self.loaded.tokenizer, list(batch), self.chat, self.loaded.device)
        logits = self.loaded.model(**inputs, use_cache=False, logits_to_keep=1).logits[:, -1]
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def first_token_logprobs(self) -> torch.Tensor:
        return torch.cat(self.batcher.run(self.harmless, lambda b, _s: self._logprobs(b)), dim=0)

    def compute_base(self) -> None:
        self.base_logprobs = self.first_token_logprobs()

    @torch.inference_mode()
    def kl_divergence(self) -> float:
        """Computed batch by batch: the temporaries are batch x vocabulary, never prompts x
        vocabulary (four float32 copies of 1,000 prompts x 262k tokens would be 4 GB)."""
        base_all = self.base_logprobs
        assert base_all is not None, "compute_base() first"

        def run(batch: Sequence[str], start: int) -> torch.Tensor:
            edited = self._logprobs(batch)
            base = base_all[start : start + len(batch)].to(edited.device)
            return (base.exp() * (base - edited)).sum(-1).cpu()

        per_prompt = torch.cat(self.batcher.run(self.harmless, run), dim=0)
        return max(0.0, float(per_prompt.mean()))

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        *,
        stop_at_markers: bool = True,
    ) -> list[str]:
        """Greedy answers. With stop_at_markers a row ends at its first refusal marker (enough
        to count it); without, every answer runs to end of sequence or the budget."""
        tok = self.loaded.tokenizer
        config = self.generation_config
        if max_new_tokens is not None:
            config = GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
                **{**config.to_dict(), "max_new_tokens": max_new_tokens}
            )

        def run(batch: Sequence[str], _start: int) -> list[str]:
            inputs = encode(tok, list(batch), self.chat, self.loaded.device)
            width = inputs["input_ids"].shape[1]
            stop = StoppingCriteriaList(
                [_MarkerStop(tok, width, self.markers, self.strip_thinking)]
                if stop_at_markers
                else []
            )
            out = self.loaded.model.generate(
                **inputs, generation_config=config, stopping_criteria=stop
            )
            return tok.batch_decode(out[:, width:], skip_special_tokens=True)

        return [text for part in self.batcher.run(prompts, run) for text in part]

    def is_refusal(self, text: str) -> bool:
        return is_refusal(text, self.markers, self.strip_thinking)

    def refusals(self) -> RefusalResult:
        responses = self.generate(self.harmful)
        flags = [self.is_refusal(r) for r in responses]
        return RefusalResult(sum(flags), len(flags), responses, flags)
