"""Secrets we must never write anywhere: which environment variables hold them, and redaction.

Guaranteed: `redact(text)` replaces the current value of every secret variable (HF_TOKEN and the
provider keys) that is at least 4 characters long. Not guaranteed: secrets that were never in
the environment (pass them in `extra`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

SECRET_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "CONTAINER_API_KEY",
    "RUNPOD_API_KEY",
    "VAST_API_KEY",
    "HERETIC_NOTIFY",  # webhook URLs carry their secret in the path or query
)
# Options whose value is a secret; masked in recorded command lines (lock files, registry).
SECRET_OPTIONS = ("--notify",)
MASK = "****"


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    values = {environ.get(name, "").strip() for name in SECRET_ENV}
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str, extra: Iterable[str | None] = (),
           environ: Mapping[str, str] | None = None) -> str:
    """`text` with every known secret replaced by ****."""
    for secret in [*(s for s in extra if s and len(s) >= 4), *secret_values(environ)]:
        text = text.replace(secret, MASK)
    return text


def safe_cmdline(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """`argv` joined for messages and lock files, with secret option values and env secrets
    masked (`--notify URL` and `--notify=URL` alike)."""
    parts: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            parts.append(MASK)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_OPTIONS:
            parts.append(f"{name}={MASK}" if eq else arg)
            hide_next = not eq
            continue
        parts.append(arg)
    return redact(" ".join(parts), environ=environ)
