"""Residual-stream vectors at the last prompt token, for the embedding output and every decoder
layer, from plain forward passes with hooks.

Only position -1 is kept (prompts are left padded), in float32 on the CPU: a prompt costs
(L+1) x hidden floats, never seq x hidden per layer as `output_hidden_states` would. Logits are
limited to one position, so no full-vocabulary tensor per token is built either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from heretic.engine.architecture import Architecture, ModuleOutput
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode
from heretic.engine.loading import LoadedModel
from heretic.progress import NullReporter, Reporter


def _first_tensor(output: ModuleOutput) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class _LastTokenTap:
    """Hooks that copy hidden[:, -1, :] of the embedding output and each layer's output."""

    def __init__(self, arch: Architecture) -> None:
        self.arch = arch
        self.slots: list[torch.Tensor | None] = [None] * (arch.num_layers + 1)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> _LastTokenTap:
        first = self.arch.layers[0].layer

        def pre_hook(
            _module: nn.Module, args: tuple[object, ...], kwargs: dict[str, object]
        ) -> None:
            hidden = args[0] if args else kwargs["hidden_states"]
            if not isinstance(hidden, torch.Tensor):
                raise TypeError(
                    f"The first decoder layer's input is a {type(hidden).__name__}, "
                    "not the hidden-states tensor."
                )
            self.slots[0] = hidden[:, -1, :].detach().float().cpu()

        self.handles.append(first.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for entry in self.arch.layers:

            def hook(
                _module: nn.Module,
                _args: tuple[object, ...],
                output: ModuleOutput,
                index: int = entry.index + 1,
            ) -> None:
                self.slots[index] = _first_tensor(output)[:, -1, :].detach().float().cpu()

            self.handles.append(entry.layer.register_forward_hook(hook))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()

    def take(self) -> torch.Tensor:
        stacked = torch.stack([s for s in self.slots if s is not None], dim=1)  # (b, L+1, d)
        self.slots = [None] * len(self.slots)
        return stacked


@torch.inference_mode()
def collect_residuals(
    loaded: LoadedModel,
    arch: Architecture,
    prompts: Sequence[str],
    batcher: Batcher,
    *,
    chat: ChatFormat | None = None,
    reporter: Reporter | None = None,
    label: str = "residuals",
    check: Callable[[], None] | None = None,
) -> torch.Tensor:
    """(n_prompts, L+1, hidden) float32 on the CPU. `check()` runs before every batch and may
    raise to stop the pass (a stop request): a 10k-prompt pass stops within one batch."""
    reporter = reporter or NullReporter()
    model, tokenizer = loaded.model, loaded.tokenizer
    chat = chat or ChatFormat()

    def run_batch(batch: Sequence[str], _start: int) -> torch.Tensor:
        inputs = encode(tokenizer, list(batch), chat, loaded.device)
        with _LastTokenTap(arch) as tap:
            model(**inputs, use_cache=False, logits_to_keep=1)
            return tap.take()

    with reporter.task(label, len(prompts)) as advance:
        parts = batcher.run(prompts, run_batch, on_batch=advance, check=check)
    return torch.cat(parts, dim=0)
