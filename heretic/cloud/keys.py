"""Provider API keys: where they are read from, and how they are kept out of every output.

Guaranteed: a key is read from the provider's environment variable first, then from the key
file the provider's own CLI writes; it is never part of an exception message, a log line or a
dry-run listing (`heretic.secrets.redact` replaces it wherever it could appear). Not guaranteed: that the key
is valid; the provider says so on the first call (401/403 becomes a `CloudError`).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from heretic.errors import CloudError

KEY_ENV = {"vast": "VAST_API_KEY", "runpod": "RUNPOD_API_KEY"}


def _key_files(provider: str, home: Path) -> list[Path]:
    if provider == "vast":
        return [home / ".config" / "vastai" / "vast_api_key", home / ".vast_api_key"]
    return [home / ".runpod" / "config.toml"]


def _read_runpod_toml(path: Path) -> str | None:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    # The SDK writes [default] api_key = "..."; runpodctl writes apikey = "..." at the top.
    for table in (data.get("default", {}), data):
        if isinstance(table, dict):
            for name in ("api_key", "apikey", "apiKey"):
                value = table.get(name)
                if isinstance(value, str) and value.strip():
                    return value.strip()
    return None


def load_key(
    provider: str, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> str | None:
    """The provider's API key, or None when neither the variable nor a key file holds one."""
    environ = os.environ if environ is None else environ
    value = environ.get(KEY_ENV[provider], "").strip()
    if value:
        return value
    home = home if home is not None else Path.home()
    for path in _key_files(provider, home):
        if not path.is_file():
            continue
        if path.suffix == ".toml":
            found = _read_runpod_toml(path)
        else:
            try:
                found = path.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeDecodeError):
                found = None
        if found:
            return found
    return None


def require_key(
    provider: str, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> str:
    key = load_key(provider, environ, home)
    if key is None:
        files = ", ".join(str(p) for p in _key_files(provider, home or Path("~")))
        raise CloudError(
            f"No {provider} API key found: {KEY_ENV[provider]} is not set and no key file "
            f"exists ({files}).",
            f"Create a key in the {provider} console and export {KEY_ENV[provider]}=... "
            "(heretic never prints or stores it).",
        )
    return key
