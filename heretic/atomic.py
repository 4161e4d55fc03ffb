"""Atomic files: a reader sees the old file or the new one, never half of one.

The one place heretic writes a file by temp-file-and-rename. Guaranteed: the temp file lives in
the target's folder (so the rename is atomic), is fsynced before `os.replace`, and is removed
when writing fails (disk full, an exception in a plotting callback, an interrupt). Not
guaranteed: durability of the folder entry after a power cut (no folder fsync on every write:
progress is rewritten often and is only advisory).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_with(path: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temp file next to `path`, then replace `path` with it.

    For writers that want a path of their own (matplotlib's savefig: give it the format, the
    temp name ends in .tmp so that no reader globbing for the target's suffix sees it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically; OSError (disk full) propagates."""
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp: Path) -> None:
        tmp.write_bytes(raw)

    write_with(path, write)


def write_json(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write `data` as JSON (non-JSON values as their str) to `path` atomically."""
    write_atomic(path, json.dumps(data, indent=indent, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing, unreadable, a symbolic link or
    not an object."""
    try:  # never through a link: a planted DONE.json -> elsewhere is no state of ours
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="utf-8") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
