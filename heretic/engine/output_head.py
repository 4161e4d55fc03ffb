"""The model's output head applied one answer at a time, so a teacher-forced pass never holds
batch x answer length x vocabulary logits.

The answer damage (answer_kl.py) needs the next-token distribution at every answer position:
with `logits_to_keep=n` the model's forward materializes B x n x V logits at once (100 prompts'
batch of 64, 32 tokens and a 152k vocabulary: 1.2 GB in bf16 before any float32 copy;
benchmarks/bench_memory.py measured 3.3 GiB at 262k), the largest tensor of the whole run.
Instead, a forward pre-hook on the output head takes the hidden states the forward hands it
(B x n x hidden, small) and passes only the last position on, so the forward's own logits are
B x V, as in the KL pass; the head is then applied to one answer's n positions at a time.

Applying the head outside the forward must give the forward's logits, including what an
architecture does after the matmul (Gemma 2's final soft-capping, Cohere's logit scale,
Granite's logits scaling). Each capture is checked against the forward's own logits of the
last position; an architecture whose forward does something else fails the check and the
caller falls back to the model's full logits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel


class OutputHead:
    """get_output_embeddings() plus the architecture's post-matmul transform, as a function of
    hidden states [..., H] -> logits [..., V]."""

    def __init__(self, model: PreTrainedModel) -> None:
        head = model.get_output_embeddings()  # type: ignore[no-untyped-call]  # unannotated in transformers
        self.module: nn.Module | None = head if isinstance(head, nn.Module) else None
        text = model.config.get_text_config()
        self._softcap = _number(text, "final_logit_softcapping")
        self._scale = _number(text, "logit_scale")  # Cohere multiplies
        self._divide = _number(text, "logits_scaling")  # Granite divides

    @property
    def usable(self) -> bool:
        return self.module is not None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        assert self.module is not None
        logits: torch.Tensor = self.module(hidden.contiguous())
        if self._softcap is not None:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        if self._scale is not None:
            logits = logits * self._scale
        if self._divide is not None:
            logits = logits / self._divide
        return logits

    @contextmanager
    def capture(self) -> Iterator[list[torch.Tensor]]:
        """Inside: every forward hands the head only its last position; the hidden states it
        was given ([B, n, H]) are appended to the yielded list."""
        assert self.module is not None
        seen: list[torch.Tensor] = []

        def keep_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            hidden = args[0]
            seen.append(hidden)
            return (hidden[:, -1:, :].contiguous(), *args[1:])

        handle = self.module.register_forward_pre_hook(keep_last)
        try:
            yield seen
        finally:
            handle.remove()

    def matches(self, hidden_last: torch.Tensor, logits_last: torch.Tensor) -> bool:
        """Does this head turn the last position's hidden states [B, H] into the forward's own
        logits [B, V]? One row is checked (a missing transform shows in every row), so the
        check adds no batch x vocabulary float copies. Tolerance: 16-bit matmuls of other
        shapes round differently."""
        mine = self(hidden_last[:1]).float()
        theirs = logits_last[:1].to(mine.device).float()
        if mine.shape != theirs.shape:
            return False
        scale = float(theirs.abs().max()) + 1.0
        return bool((mine - theirs).abs().max() <= 1e-2 * scale)


def _number(config: object, name: str) -> float | None:
    value = getattr(config, name, None)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def log_prob_rows(
    head: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, n: int
) -> Iterator[torch.Tensor]:
    """Float32 log-probs [n, V] of each row of hidden [B, >=n, H], one row at a time."""
    for row in hidden:
        yield torch.log_softmax(head(row[-n:]).float(), dim=-1)
