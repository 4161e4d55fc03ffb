"""Free disk space during the search: checked before each trial, and ENOSPC turned into exit 15.

A disk that fills in the middle of a journal append tears the journal (the next start repairs
it, heretic.engine.journal), but a search that stops *before* the disk is full leaves a clean,
resumable study. So before each trial `SpaceGuard.check` asks for a margin: the next trial's
records (twice the journal growth per trial seen so far, at least `MIN_TRIAL_BYTES`) plus, on
the disk that holds the output, the export (the model's weight files) and the report. Below it
the search stops with DiskFullError (exit 15); freeing space and running the same command again
resumes. Not guaranteed: other programs filling the disk faster than one trial writes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from heretic.engine.journal import JOURNAL_FILE
from heretic.errors import DiskFullError

MIN_TRIAL_BYTES = 1 << 20  # journal records, progress.json (written twice by its rename), log
REPORT_BYTES = 2 << 20  # report.json, trials.jsonl, the plots and the model card
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def _existing(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def _device(path: Path) -> int:
    return os.stat(_existing(path)).st_dev


def weights_bytes(model_dir: Path | str) -> int:
    """Bytes of the weight files in a local model folder (what an export writes again)."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class SpaceGuard:
    """Before each trial: enough room for the next trial's records and for the export."""

    def __init__(self, study_dir: Path, output: Path, export_bytes: int) -> None:
        self.study_dir = Path(study_dir)
        self.output = Path(output)
        self.export_bytes = export_bytes + REPORT_BYTES
        self._journal = self.study_dir / JOURNAL_FILE
        self._start_size = self._size()
        self._trials = 0

    def _size(self) -> int:
        try:
            return self._journal.stat().st_size
        except OSError:
            return 0

    def trial_done(self) -> None:
        self._trials += 1

    def trial_bytes(self) -> int:
        grown = max(self._size() - self._start_size, 0)
        return max(2 * grown // max(self._trials, 1), MIN_TRIAL_BYTES)

    def needs(self) -> dict[Path, int]:
        """Bytes needed now on each disk (keyed by a folder on it)."""
        trial, export = self.trial_bytes(), self.export_bytes
        if _device(self.study_dir) == _device(self.output):
            return {self.study_dir: trial + export}
        return {self.study_dir: trial, self.output: export}

    def check(self) -> None:
        for folder, need in self.needs().items():
            free = free_bytes(folder)
            if free < need:
                raise DiskFullError(
                    f"The disk holding {folder} has {_mib(free)} free, less than the next "
                    f"trial and the export need ({_mib(need)}); the search stopped before it "
                    "could fill the disk, and the study is saved.",
                    "Free space (or move --output / --study-dir to a larger disk), then run "
                    "the same command again: the study resumes.",
                )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def no_space_is_exit_15(where: Path) -> Iterator[None]:
    """Turn ENOSPC (or a full quota) raised inside into DiskFullError (exit 15)."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(
            f"The disk filled up while heretic wrote to {where} ({exc.strerror}); the study "
            "keeps every trial completed so far.",
            "Free space (or move --output / --study-dir to a larger disk), then run the same "
            "command again: a torn journal record is repaired and the study resumes.",
        ) from exc
