"""Can heretic write where it was told to? Checked before the study lock and before any weight
loads, so a read-only --output (or --study-dir) fails in milliseconds with exit 7 instead of
after the whole search.

`check_writable(folder)` writes and removes a probe file in `folder`, or, when `folder` does not
exist yet, in its nearest existing parent (where it would be created); nothing is left behind
and no folder is created. Not guaranteed: that the disk has room (preflight's disk check says
that) or that the folder stays writable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from heretic.errors import PreflightError


def _nearest_existing(folder: Path) -> Path:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def check_writable(folder: Path, what: str, option: str) -> None:
    """PreflightError (exit 7) naming `what` and `option` unless files can be made there."""
    folder = Path(folder).expanduser().absolute()
    target = _nearest_existing(folder)
    problem = None
    if not target.is_dir():
        problem = f"{target} is not a folder"
    else:
        try:
            fd, name = tempfile.mkstemp(prefix=".heretic-write-probe-", dir=target)
            os.close(fd)
            os.unlink(name)
        except OSError as exc:
            problem = f"{target} cannot be written ({exc.strerror or exc})"
    if problem is not None:
        raise PreflightError(
            f"The {what} {folder} cannot be used: {problem}. Nothing was started.",
            f"Choose a writable {option} (or fix the folder's permissions or mount).",
        )
