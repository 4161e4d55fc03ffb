"""One interface through which the engine reports progress; the CLI picks how it is rendered.

The engine calls `reporter.info(...)` and `with reporter.task(name, total) as advance: ...`.
`RichReporter` draws progress bars with ETA on a terminal (stderr), `LineReporter` writes plain
timestamped lines (logs, containers, pipes), `NullReporter` is silent (library use, tests).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol, TextIO

Advance = Callable[[int], None]


class Reporter(Protocol):
    def info(self, message: str) -> None: ...

    def warn(self, message: str) -> None: ...

    def task(self, name: str, total: int) -> AbstractContextManager[Advance]: ...


class NullReporter:
    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Advance]:
        def advance(n: int = 1) -> None:
            pass

        yield advance


def _fmt_eta(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class LineReporter:
    """Plain lines with timestamps and an ETA; at most one progress line every few seconds."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every_s = every_s

    def _line(self, text: str) -> None:
        self.stream.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
        self.stream.flush()

    def info(self, message: str) -> None:
        self._line(message)

    def warn(self, message: str) -> None:
        self._line(f"WARNING: {message}")

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Advance]:
        start = time.monotonic()
        state = {"done": 0, "last": 0.0}

        def advance(n: int = 1) -> None:
            state["done"] += n
            now = time.monotonic()
            if now - state["last"] >= self.every_s or state["done"] >= total:
                state["last"] = now
                done = state["done"]
                rate = (now - start) / max(done, 1)
                eta = _fmt_eta(rate * (total - done))
                self._line(f"{name}: {done}/{total} (ETA {eta})")

        yield advance


class RichReporter:
    """Progress bars with ETA on stderr, for interactive terminals."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"WARNING: {message}", style="yellow", markup=False)

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Advance]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(name, total=total)

            def advance(n: int = 1) -> None:
                progress.advance(task_id, n)

            yield advance


def default_reporter() -> NullReporter | LineReporter | RichReporter:
    return RichReporter() if sys.stderr.isatty() else LineReporter()
