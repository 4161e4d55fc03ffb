"""Secrets we must never write anywhere: which environment variables hold them, and how they
are masked. The one list and the one mask for the whole package (the CLI, the lifecycle, the
cloud clients and the settings dump all use these).

Guaranteed: `redact(text)` replaces the current value of every secret variable (HF_TOKEN and the
provider keys) that is at least 4 characters long, the password of any URL written
`scheme://user:password@host` (a storage URL, however it was given), the password of the
storage URL in HERETIC_STORAGE, and every value registered with `add_secret` (the storage
password from a config file). Not guaranteed: secrets that were never in the environment, a URL
or a registration (pass them in `extra`). `mask` is the recognisable form for a dry-run listing
("hf_****" says which token would be sent); `redact` masks whole values unless asked for that.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import unquote, urlsplit

SECRET_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "CONTAINER_API_KEY",
    "RUNPOD_API_KEY",
    "VAST_API_KEY",
    "HERETIC_NOTIFY",  # webhook URLs carry their secret in the path or query
    "HERETIC_JUDGE_API_KEY",  # the judge endpoint's key (judge_api_key_env names another)
)
# Environment variables holding a URL whose password (only) is secret.
SECRET_URL_ENV = ("HERETIC_STORAGE",)
# Options whose value is a secret; masked in recorded command lines (lock files, registry).
SECRET_OPTIONS = ("--notify",)
# Settings whose value is a secret; masked in `--set KEY=VALUE` of recorded command lines.
SECRET_SETTINGS = ("notify",)
MASK = "****"
# scheme://user:password@  (the user part has no ':', '/' or '@'; the password ends at the last
# '@' before the host, so a password containing '@' or ':' is masked whole).
_URL_PASSWORD = re.compile(
    r"([A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)([^\s/]*)@(?=[^@\s]*(?:[/\s]|$))"
)
_registered: set[str] = set()


def url_password(url: str | None) -> str | None:
    """The password of `scheme://user:password@host/...`, decoded, or None."""
    if not url or "://" not in url:
        return None
    try:
        password = urlsplit(url).password
    except ValueError:
        return None
    return unquote(password) if password else None


def mask_url_password(text: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:****@host/db, anywhere in text."""
    return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)


def mask(value: str) -> str:
    """A recognisable but useless form of a secret: its first 3 characters, then the mask
    (the mask alone for values of 8 characters or fewer)."""
    if len(value) <= 8:
        return MASK
    return value[:3] + MASK


def add_secret(value: str | None) -> None:
    """Register a secret known only at run time (for example a storage password from a config
    file), so every later `redact` in this process masks it."""
    if value and len(value) >= 4:
        _registered.add(value)


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    values = {environ.get(name, "").strip() for name in SECRET_ENV}
    for name in SECRET_URL_ENV:
        password = url_password(environ.get(name))
        if password:
            values |= {password, _quoted(environ.get(name, ""), password)}
    values |= _registered
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def _quoted(url: str, password: str) -> str:
    """The password as it is written in the URL (percent-encoded, maybe)."""
    raw = urlsplit(url).netloc.rpartition("@")[0].partition(":")[2]
    return raw or password


def redact(
    text: str,
    extra: Iterable[str | None] = (),
    environ: Mapping[str, str] | None = None,
    *,
    hint: bool = False,
) -> str:
    """`text` with every known secret replaced by ****, or by `mask(secret)` with hint=True."""
    text = mask_url_password(text)
    for secret in [*(s for s in extra if s and len(s) >= 4), *secret_values(environ)]:
        text = text.replace(secret, mask(secret) if hint else MASK)
    return text


def _mask_assignment(assignment: str) -> str:
    """KEY=VALUE with the value masked when KEY is a secret setting."""
    key, eq, _ = assignment.partition("=")
    return f"{key}={MASK}" if eq and key.strip() in SECRET_SETTINGS else assignment


def safe_cmdline(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> str:
    """`argv` joined for messages and lock files, with secret option values, URL passwords and
    env secrets masked (`--notify URL`, `--notify=URL` and `--set notify=URL` alike)."""
    parts: list[str] = []
    hide_next = False
    after_set = False
    for arg in argv:
        if hide_next:
            parts.append(MASK)
            hide_next = False
            continue
        if after_set:
            after_set = False
            parts.append(_mask_assignment(arg))
            continue
        if arg == "--set":
            after_set = True
            parts.append(arg)
            continue
        if arg.startswith("--set="):
            parts.append("--set=" + _mask_assignment(arg[len("--set=") :]))
            continue
        name, eq, _ = arg.partition("=")
        if name in SECRET_OPTIONS:
            parts.append(f"{name}={MASK}" if eq else arg)
            hide_next = not eq
            continue
        parts.append(arg)
    return redact(" ".join(parts), environ=environ)
