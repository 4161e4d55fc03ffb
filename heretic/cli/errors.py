"""The CLI edge: turns library exceptions into one message paragraph and a distinct exit code.

Tracebacks are shown only with HERETIC_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import TypeVar

import typer

from heretic.errors import ExitCode, HereticError

T = TypeVar("T")


def _debug() -> bool:
    return os.environ.get("HERETIC_DEBUG", "") not in ("", "0", "false")


def fail(message: str, code: int) -> typer.Exit:
    from heretic.secrets import redact

    # A driver's or library's text may quote a URL with its password, or a token.
    sys.stderr.write(f"error: {redact(message)}\n")
    sys.stderr.flush()
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run `fn`; map every failure to a message and an exit code."""
    try:
        return fn()
    except typer.Exit:
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
        if _debug():
            traceback.print_exc()
        raise fail(
            f"Internal error: {type(exc).__name__}: {exc}. This is a bug in heretic or an "
            "unexpected environment; rerun with HERETIC_DEBUG=1 for the traceback and report it.",
            int(ExitCode.INTERNAL),
        ) from None
