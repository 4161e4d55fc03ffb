"""Runs work over a list in batches, halving the batch size on out-of-memory instead of crashing.

The size that worked is kept in the `Batcher`, so later passes start from it rather than
rediscovering it. Only when a single item does not fit is `OutOfMemoryError` raised.
A `check` callback, when given, is called before every batch: it raises to stop a long pass
between batches (a stop request during the residual pass or the verification).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from heretic.errors import OutOfMemoryError

T = TypeVar("T")
R = TypeVar("R")


def _free_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Batcher:
    def __init__(
        self, batch_size: int, what: str = "batch", check: Callable[[], None] | None = None
    ) -> None:
        self.batch_size = max(1, batch_size)
        self.what = what
        self.halvings = 0
        self.check = check  # called before every batch of every pass (see `run`)

    def run(
        self,
        items: Sequence[T],
        fn: Callable[[Sequence[T], int], R],
        on_batch: Callable[[int], None] | None = None,
        check: Callable[[], None] | None = None,
    ) -> list[R]:
        """fn(batch, start_index) for consecutive batches; results in order. `check` (else
        the Batcher's own) is called before each batch and may raise to stop the pass."""
        check = check or self.check
        results: list[R] = []
        start = 0
        while start < len(items):
            if check is not None:
                check()
            size = min(self.batch_size, len(items) - start)
            try:
                results.append(fn(items[start : start + size], start))
            except torch.OutOfMemoryError as exc:
                _free_cache()
                if size == 1:
                    raise OutOfMemoryError(
                        f"Out of memory on a single prompt during {self.what}.",
                        "Use a profile with 4-bit quantization, a split device map, a shorter "
                        "--max-response-tokens, or a larger GPU.",
                    ) from exc
                self.batch_size = max(1, size // 2)
                self.halvings += 1
                continue
            start += size
            if on_batch is not None:
                on_batch(size)
        return results
