"""Chat formatting and tokenization: every prompt goes through the model's chat template with
the generation prompt appended, left padded, so position -1 is the last prompt token."""

from __future__ import annotations

import torch
from transformers import BatchEncoding, PreTrainedTokenizerBase


def format_chat(tokenizer: PreTrainedTokenizerBase, prompt: str, system: str | None) -> str:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def encode(
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    system: str | None,
    device: torch.device,
) -> BatchEncoding:
    texts = [format_chat(tokenizer, p, system) for p in prompts]
    # The template already holds any BOS token; adding special tokens would double it.
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch.to(device)
