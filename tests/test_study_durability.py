"""No crash or full disk breaks a study: a torn journal tail is cut and kept, damage in the
middle and unparsable study files are exit 14 naming the file, a filling disk stops the search
with exit 15 and a resumable study (unit level here; the real CLI in test_run_durability.py)."""

from __future__ import annotations

import errno
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

from heretic.config.settings import Settings
from heretic.engine.journal import JOURNAL_FILE, repair_journal
from heretic.errors import DiskFullError, StudyError
from heretic.run.disk_space import MIN_TRIAL_BYTES, SpaceGuard, no_space_is_exit_15
from heretic.run.study_files import (
    check_or_record_settings,
    load_directions,
    load_layer_profile,
    settings_of_study,
)


def _study_with_trials(study_dir: Path, n: int) -> Path:
    study_dir.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    study = optuna.create_study(storage=storage, study_name="heretic", directions=["minimize"] * 2)
    for i in range(n):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        study.tell(trial, [x, float(i)])
    return study_dir / JOURNAL_FILE


def _completed(study_dir: Path) -> int:
    storage = JournalStorage(JournalFileBackend(str(study_dir / JOURNAL_FILE)))
    study = optuna.load_study(study_name="heretic", storage=storage)
    return len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


def test_a_cut_last_record_is_repaired_kept_beside_and_the_study_goes_on(tmp_path) -> None:
    journal = _study_with_trials(tmp_path, 3)
    intact = journal.read_bytes()
    last = intact.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(intact[: last + 17])  # the last record, cut after 17 bytes

    repaired = repair_journal(tmp_path)

    assert repaired is not None
    assert journal.read_bytes() == intact[:last]
    assert repaired.kept.read_bytes() == intact[last : last + 17]
    assert repaired.kept.parent == tmp_path and repaired.kept.name.startswith("journal.log.torn-")
    assert str(repaired.kept) in repaired.describe()
    # Without the repair the next append glues itself to the torn bytes (the study is lost);
    # with it, appending and reading back work and no completed trial is lost.
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="heretic", storage=storage)
    trial = study.ask()
    study.tell(trial, [0.5, 0.5])
    assert _completed(tmp_path) >= 3


def test_the_bug_this_prevents_is_real(tmp_path) -> None:
    """Today's failure, shown on Optuna itself: appending after a torn tail breaks the file."""
    journal = _study_with_trials(tmp_path, 2)
    journal.write_bytes(journal.read_bytes()[:-9])
    for _ in range(3):  # every later run fails the same way: the glued line never parses
        with pytest.raises((ValueError, AttributeError)):
            storage = JournalStorage(JournalFileBackend(str(journal)))
            study = optuna.load_study(study_name="heretic", storage=storage)
            study.tell(study.ask(), [0.1, 0.1])


def test_an_intact_journal_is_left_alone(tmp_path) -> None:
    journal = _study_with_trials(tmp_path, 2)
    before = journal.read_bytes()
    assert repair_journal(tmp_path) is None
    assert journal.read_bytes() == before
    assert repair_journal(tmp_path / "none") is None


def test_damage_in_the_middle_is_exit_14_and_nothing_is_cut(tmp_path) -> None:
    journal = _study_with_trials(tmp_path, 3)
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2][:10] + lines[3]  # what a resume after a torn tail used to write
    damaged = b"".join(lines)
    journal.write_bytes(damaged)
    with pytest.raises(StudyError) as caught:
        repair_journal(tmp_path)
    assert caught.value.exit_code == 14
    assert str(journal) in caught.value.message and "line 3" in caught.value.message
    assert journal.read_bytes() == damaged


def test_a_garbage_journal_is_exit_14_not_thrown_away(tmp_path) -> None:
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(b"this is not a journal\n\xff\xfe binary")
    with pytest.raises(StudyError) as caught:
        repair_journal(tmp_path)
    assert str(journal) in caught.value.message
    assert journal.read_bytes() == b"this is not a journal\n\xff\xfe binary"


def test_a_journal_that_is_a_link_is_refused(tmp_path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    (tmp_path / JOURNAL_FILE).symlink_to(target)
    with pytest.raises(StudyError, match="symbolic link"):
        repair_journal(tmp_path)
    assert target.read_bytes() == b"precious"


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("settings.json", lambda d: check_or_record_settings(d, Settings())),
        ("settings.json", lambda d: settings_of_study(d.parent)),
        ("layer_profile.json", load_layer_profile),
        ("directions.safetensors", lambda d: load_directions(d / "directions.safetensors")),
    ],
)
def test_an_unparsable_study_file_is_exit_14_naming_it(tmp_path, name, read) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / name).write_bytes(b"\x00{garbage")
    with pytest.raises(StudyError) as caught:
        read(study)
    assert caught.value.exit_code == 14
    assert str(study / name) in caught.value.message


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 30 MB tmpfs (root and mount(2) needed; skipped where they are not)."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Write a filler file until `leave` bytes (about) are free on `disk`."""
    import os

    filler = disk / "filler"
    with filler.open("wb") as handle:
        while True:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                handle.write(b"\0" * min(free - leave, 1 << 20))
                handle.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    return filler


def test_the_space_guard_stops_before_the_disk_is_full(small_disk) -> None:
    study, output = small_disk / "out" / "study", small_disk / "out"
    study.mkdir(parents=True)
    guard = SpaceGuard(study, output, export_bytes=4 << 20)
    guard.check()  # 30 MB free: fine
    filler = fill(small_disk, leave=3 << 20)
    with pytest.raises(DiskFullError) as caught:
        guard.check()  # 3 MB left < one trial (1 MiB) + export (4 MiB) + report (2 MiB)
    assert caught.value.exit_code == 15
    assert str(study) in caught.value.message
    filler.unlink()
    guard.check()
    assert guard.trial_bytes() == MIN_TRIAL_BYTES


def test_enospc_inside_becomes_exit_15(small_disk) -> None:
    fill(small_disk, leave=0)
    with pytest.raises(DiskFullError) as caught, no_space_is_exit_15(small_disk):
        (small_disk / "more").write_bytes(b"x" * (1 << 20))
    assert caught.value.exit_code == 15


def test_progress_of_a_journal_is_measured_per_trial(tmp_path) -> None:
    study = tmp_path / "study"
    journal = _study_with_trials(study, 1)
    guard = SpaceGuard(study, tmp_path, export_bytes=0)
    journal.write_bytes(journal.read_bytes() + b"x" * (3 << 20))
    guard.trial_done()
    assert guard.trial_bytes() >= 6 << 20  # twice what one trial wrote
    assert json.loads(journal.read_bytes().splitlines()[0])["op_code"] == 0
