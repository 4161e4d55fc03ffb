"""Chat formatting and tokenization: every prompt goes through the model's chat template with
the generation prompt appended, left padded, so position -1 is the last prompt token."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase

from heretic.jsontypes import JsonDict


@dataclass(frozen=True)
class ChatFormat:
    """How prompts become conversations: an optional system message and template switches
    (e.g. enable_thinking=False, which Qwen3-style templates read and others ignore)."""

    system: str | None = None
    template_kwargs: JsonDict = field(default_factory=dict)


def format_chat(tokenizer: PreTrainedTokenizerBase, prompt: str, chat: ChatFormat) -> str:
    messages = [{"role": "system", "content": chat.system}] if chat.system else []
    messages.append({"role": "user", "content": prompt})
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, **chat.template_kwargs
    )
    # tokenize=False makes it a string; the result type covers the tokenizing calls too.
    if not isinstance(text, str):
        raise TypeError(f"The chat template gave a {type(text).__name__}, not a string.")
    return text


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    chat: ChatFormat,
    device: torch.device,
) -> BatchEncoding:
    texts = [format_chat(tokenizer, p, chat) for p in prompts]
    # The template already holds any BOS token; adding special tokens would double it.
    batch: BatchEncoding = tokenizer(
        texts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    return batch.to(device)
