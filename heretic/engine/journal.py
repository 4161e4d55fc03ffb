"""The study's journal file (Optuna's JournalFileBackend): checked and repaired before Optuna
opens it, so no crash or full disk strands the completed trials.

Optuna writes one JSON record per line and appends. A SIGKILL, a power cut or a full disk in
the middle of an append leaves a torn last record (no newline, or bytes that do not parse).
Optuna skips such a tail when reading, but its next append lands after the torn bytes, which
glues them to a good record in the middle of the file, and from then on every read fails.

Guaranteed: `repair_journal` cuts a torn LAST record off (the file then ends at the last good
record, exactly the state Optuna saw), after keeping the cut bytes beside it in
`journal.log.torn-<time>`; a record that does not parse with good records after it is damage in
the middle, which is refused with a StudyError naming the file and the record (cutting it would
drop later trials). The journal must not be a symbolic link. Only the process that holds the
study lock may repair, before anything appends: a worker's write in progress looks torn too.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from heretic.errors import StudyError
from heretic.statefiles import refuse_link

JOURNAL_FILE = "journal.log"


@dataclass(frozen=True)
class Repair:
    """A torn tail that was cut off: how many bytes, and where they were kept."""

    journal: Path
    kept: Path
    cut_bytes: int
    records: int  # good records left

    def describe(self) -> str:
        return (
            f"The study journal {self.journal} ended in a torn record (a crash or a full disk "
            f"during a write): cut its last {self.cut_bytes} bytes, kept in {self.kept}; "
            f"{self.records} good records remain and the study resumes from them."
        )


def _is_record(line: bytes) -> bool:
    try:
        data = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        return False
    return isinstance(data, dict) and "op_code" in data


@dataclass
class _Scan:
    good: int = 0  # records that parse
    end: int = 0  # offset just after the last good record
    seen: int = 0  # lines, the tail included
    bad_middle: int | None = None  # a bad line (1-based) that good records follow
    bad_after: int = 0  # bad lines after the last good record
    tail_start: bytes = b""  # the first bytes after the last good record


def _scan(path: Path) -> _Scan:
    scan, first_bad, offset = _Scan(), None, 0
    with path.open("rb") as handle:
        for line in handle:
            scan.seen += 1
            offset += len(line)
            if line.endswith(b"\n") and _is_record(line):
                if first_bad is not None and scan.bad_middle is None:
                    scan.bad_middle = first_bad
                scan.good, scan.end, scan.bad_after = scan.good + 1, offset, 0
                continue
            first_bad = scan.seen if first_bad is None else first_bad
            if scan.bad_after == 0:
                scan.tail_start = line[:1]
            scan.bad_after += 1
    return scan


def _damaged(path: Path, line: int, seen: int) -> StudyError:
    return StudyError(
        f"The study journal {path} is damaged: line {line} of {seen} is not a journal record, "
        "and it is not a torn last write heretic can cut off.",
        "Restore the journal from a copy, or start a fresh study: move the study folder away "
        "(or pass another --study-dir) and run again.",
    )


def repair_journal(study_dir: Path) -> Repair | None:
    """Cut a torn last record off STUDY/journal.log (keeping it beside); None when intact."""
    path = Path(study_dir) / JOURNAL_FILE
    refuse_link(path)
    if not path.is_file():
        return None
    scan = _scan(path)
    if scan.bad_middle is not None:
        raise _damaged(path, scan.bad_middle, scan.seen)
    if scan.bad_after == 0:
        return None
    # One torn record only, and something that began as a record: anything else is not a
    # write cut short (a garbage file, another program's file) and is not thrown away.
    if scan.bad_after > 1 or scan.tail_start not in (b"{", b"\x00", b""):
        raise _damaged(path, scan.good + 1, scan.seen)
    kept = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    with path.open("rb") as src:
        src.seek(scan.end)
        torn = src.read()
    kept.write_bytes(torn)  # first: if this fails (disk still full), nothing was cut
    with path.open("rb+") as handle:
        handle.truncate(scan.end)
        os.fsync(handle.fileno())
    return Repair(path, kept, len(torn), scan.good)


def journal_damage(study_dir: Path, exc: Exception) -> StudyError:
    """The error for a journal Optuna could not read (after the repair found nothing to cut)."""
    path = Path(study_dir) / JOURNAL_FILE
    return StudyError(
        f"The study journal {path} cannot be read ({type(exc).__name__}: {exc}); it is not a "
        "journal heretic or Optuna wrote, or it is damaged.",
        "Restore it from a copy, or start a fresh study: move the study folder away (or pass "
        "another --study-dir) and run again.",
    )
