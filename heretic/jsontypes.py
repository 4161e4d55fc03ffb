"""Names for values that really are arbitrary JSON (or JSON-like: TOML tables, settings layers,
Optuna attributes), so that `Any` appears in one place and a signature says what it holds."""

from __future__ import annotations

from typing import Any

# A JSON object: string keys, values of any JSON type (nested objects, lists, numbers, ...).
JsonDict = dict[str, Any]
