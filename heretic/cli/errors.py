"""The one place where failures become exit codes: every library exception turns into one
message paragraph on stderr and a distinct exit code (`heretic.errors.ExitCode`).

Every command is registered with `command(app, name)`, which runs it inside `map_errors`;
commands raise, they do not catch. Tracebacks are shown only with HERETIC_DEBUG=1.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import typer

from heretic.errors import ExitCode, HereticError
from heretic.secrets import redact


def _debug() -> bool:
    return os.environ.get("HERETIC_DEBUG", "") not in ("", "0", "false")


def fail(message: str, code: int) -> typer.Exit:
    # A driver's or library's text may quote a URL with its password, or a token.
    sys.stderr.write(f"error: {redact(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


@contextmanager
def map_errors() -> Iterator[None]:
    """Let typer's own exits through; map everything else to a message and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except HereticError as exc:
        if _debug():
            traceback.print_exc()
        raise fail(exc.paragraph(), int(exc.exit_code)) from None
    except KeyboardInterrupt:
        raise fail(
            "Interrupted. The study is saved; run the same command again to resume.",
            int(ExitCode.INTERRUPTED),
        ) from None
    except Exception as exc:  # the last line of defence: never a bare traceback
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise fail(
                f"The disk filled up ({exc.strerror}: {exc.filename or 'a file heretic wrote'}). "
                "Free space, then run the same command again: a study resumes where it stopped.",
                int(ExitCode.DISK_FULL),
            ) from None
        if _debug():
            traceback.print_exc()
        raise fail(
            f"Internal error: {type(exc).__name__}: {exc}. This is a bug in heretic or an "
            "unexpected environment; rerun with HERETIC_DEBUG=1 for the traceback and report it.",
            int(ExitCode.INTERNAL),
        ) from None


P = ParamSpec("P")
R = TypeVar("R")


def command(app: typer.Typer, name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register the decorated function as `app`'s command `name`, run inside `map_errors`.
    (typer reads the options from the wrapped function's signature.)"""

    def register(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def mapped(*args: P.args, **kwargs: P.kwargs) -> R:
            with map_errors():
                return fn(*args, **kwargs)

        app.command(name)(mapped)
        return fn

    return register


def exit_with(code: int) -> None:
    """End the command with `code` (nothing to do for 0)."""
    if code:
        raise typer.Exit(code)
