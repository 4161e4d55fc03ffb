"""The output folder is heretic's only when heretic made it: a marker names it, a lock guards it.

heretic overwrites README.md, report.json and the model/ folder of its output, so it must never
take a folder that holds someone else's files. Guaranteed by `claim_output`, before anything
is written there:
- refused (exit 3): the root folder, the home folder, a path that is not a folder, and a folder
  without the marker `.heretic-output.json` that holds anything but what a heretic run leaves
  (an empty folder is taken; a folder of an older heretic, with report.json or study/ and
  nothing foreign, is adopted);
- one run per output folder at a time: `.heretic-output.lock`, a flock like the study lock
  (a second run with the same --output and another --study-dir fails with exit 8 naming the
  first);
- left-overs of a run killed mid-write (`.pareto.png.*.tmp` and the like) are removed, and
  only those: names heretic's own temp-file writer makes (heretic.atomic).
To start afresh, delete the folder (or give a new --output); heretic never empties one itself.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from heretic import __version__
from heretic.errors import ConfigError, LockedError, StudyError
from heretic.preflight.lock import RunLock, read_holder, write_holder
from heretic.statefiles import check_folder, lock_file, open_state, read_text

MARKER = ".heretic-output.json"
OUTPUT_LOCK = ".heretic-output.lock"
# What a run writes at the top of its output folder (trial-N from `heretic export --trial N`).
WRITTEN = {
    MARKER,
    OUTPUT_LOCK,
    "study",
    "model",
    ".model.partial",
    "report.json",
    "trials.jsonl",
    "pareto.png",
    "layer_profile.png",
    "README.md",
}
# The study folder's atomically written files (their temp files are tidied under the lock).
STUDY_TEMP_TARGETS = {"progress.json", "DONE.json", "settings.json", "layer_profile.json"}
_TRIAL_DIR = re.compile(r"trial-\d+")
_TEMP_FILE = re.compile(r"\.(?P<name>[^/]+)\.[A-Za-z0-9_]+\.tmp")  # heretic.atomic's names


def _ours(name: str) -> bool:
    temp = _TEMP_FILE.fullmatch(name)
    return (
        name in WRITTEN
        or bool(_TRIAL_DIR.fullmatch(name))
        or (temp is not None and temp["name"] in WRITTEN)
    )


def _refuse(output: Path, why: str) -> ConfigError:
    return ConfigError(
        f"--output {output} {why}; heretic overwrites and replaces files in its output folder, "
        "so it only writes to a folder it created.",
        "Name a new or empty folder (for example --output heretic-output); to start a run "
        "afresh, delete the old output folder yourself or choose another one.",
    )


def check_output(output: Path) -> None:
    """Refuse an output folder heretic must not write to (nothing is created here)."""
    where = Path(output).expanduser().absolute()
    resolved = where.resolve()
    if resolved == Path(resolved.anchor):
        raise _refuse(output, "is the root folder")
    if resolved == Path.home().resolve():
        raise _refuse(output, "is the home folder")
    if where.exists() and not where.is_dir():
        raise _refuse(output, "is not a folder")
    if not where.is_dir() or (where / MARKER).is_file():
        return
    names = sorted(os.listdir(where))
    foreign = [n for n in names if not _ours(n)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise _refuse(output, f"holds files heretic did not write ({shown})")
    if names and not {"study", "report.json"} & set(names):
        raise _refuse(output, f"holds {', '.join(names[:5])} but no heretic marker ({MARKER})")


def claim_output(output: Path) -> RunLock:
    """Check, lock and mark the output folder; the held lock (release it when the run ends)."""
    check_output(output)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    check_folder(output)
    path = output / OUTPUT_LOCK
    fd = lock_file(path, block=False)
    if fd is None:
        raise LockedError(
            f"The output folder {output} is in use by {read_holder(path).describe()}.",
            "Wait for that run to finish, or give this run another --output.",
        )
    lock = RunLock([(path, fd)])
    try:
        write_holder(fd)
        _mark(output)
        remove_temp_files(output, WRITTEN)
    except BaseException:
        lock.release()
        raise
    return lock


@contextmanager
def output_claimed(output: Path) -> Iterator[None]:
    """`claim_output` for a `with` block; a folder this claim created is removed again when the
    block fails before anything but the marker and the lock was written there."""
    fresh = not Path(output).exists()
    lock = claim_output(output)
    try:
        yield
    except BaseException:
        if fresh and set(os.listdir(output)) <= {MARKER, OUTPUT_LOCK}:
            for name in (MARKER, OUTPUT_LOCK):
                (Path(output) / name).unlink(missing_ok=True)
            Path(output).rmdir()
        raise
    finally:
        lock.release()


def _mark(output: Path) -> None:
    marker = output / MARKER
    if marker.is_file() and not marker.is_symlink():
        try:
            json.loads(read_text(marker))
            return
        except (OSError, ValueError) as exc:
            raise StudyError(
                f"The output marker {marker} cannot be read ({exc}).",
                f"Delete {marker} if {output} is a heretic output folder, then run again.",
            ) from exc
    fd = open_state(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        record = {"heretic_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        handle.write(json.dumps(record) + "\n")


def remove_temp_files(folder: Path, targets: set[str]) -> list[str]:
    """Remove the temp files a killed run left in `folder` for the files named in `targets`
    (heretic.atomic's names only; the caller holds the folder's lock). Returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        temp = _TEMP_FILE.fullmatch(name)
        path = folder / name
        if (
            temp is not None
            and temp["name"] in targets
            and path.is_file()
            and not path.is_symlink()
        ):
            path.unlink(missing_ok=True)
            removed.append(name)
    return removed
