"""No link is followed where heretic writes state: a link planted as a lock, the log or the
machine folder is refused and its target keeps its bytes."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import optuna
import pytest

from heretic.engine.study import claim_trial
from heretic.errors import StudyError
from heretic.lifecycle.logfile import attach_log_file, detach_log_file
from heretic.preflight.lock import LOCK_NAME, acquire_run_lock, machine_lock_dir, probe_lock
from heretic.preflight.registry import register_process
from heretic.statefiles import check_folder, held_lock, lock_is_held

PRECIOUS = b"the user's bytes\n" * 10


def _plant(link: Path, tmp_path: Path) -> Path:
    target = tmp_path / "victim.bin"
    target.write_bytes(PRECIOUS)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


def test_a_symlinked_study_lock_is_refused_and_its_target_keeps_its_bytes(tmp_path) -> None:
    study = tmp_path / "study"
    target = _plant(study / LOCK_NAME, tmp_path)
    with pytest.raises(StudyError, match="symbolic link") as caught:
        acquire_run_lock(study)
    assert caught.value.exit_code == 14
    assert target.read_bytes() == PRECIOUS
    assert probe_lock(study / LOCK_NAME) is None  # a probe does not follow it either


@pytest.mark.parametrize("name", [".claim.lock", ".directions.lock"])
def test_symlinked_claim_and_directions_locks_truncate_nothing(tmp_path, name) -> None:
    study = tmp_path / "study"
    target = _plant(study / name, tmp_path)
    with pytest.raises(StudyError, match="symbolic link"):
        if name == ".claim.lock":
            claim_trial(optuna.create_study(directions=["minimize"] * 2), study, 3)
        else:
            with held_lock(study / name):
                pass
    assert target.read_bytes() == PRECIOUS


def test_a_symlinked_log_is_refused_not_appended_to(tmp_path) -> None:
    study = tmp_path / "study"
    target = _plant(study / "heretic.log", tmp_path)
    with pytest.raises(StudyError, match="symbolic link"):
        attach_log_file(study)
    assert target.read_bytes() == PRECIOUS
    assert not logging.getLogger("heretic").handlers or all(
        not isinstance(h, logging.FileHandler) for h in logging.getLogger("heretic").handlers
    )


def test_the_log_is_written_when_no_link_is_there(tmp_path) -> None:
    handler = attach_log_file(tmp_path)
    try:
        logging.getLogger("heretic.run").info("hello log")
    finally:
        detach_log_file(handler)
    assert "hello log" in (tmp_path / "heretic.log").read_text()


def test_the_machine_folder_is_private_and_refused_when_a_link(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = machine_lock_dir()
    assert folder == tmp_path / f"heretic-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    folder.chmod(0o755)  # ours but opened up: closed again
    assert stat.S_IMODE(machine_lock_dir().stat().st_mode) == 0o700
    folder.rmdir()
    elsewhere = tmp_path / "attacker"
    elsewhere.mkdir()
    folder.symlink_to(elsewhere)
    with pytest.raises(StudyError, match="symbolic link"):
        machine_lock_dir()
    with pytest.raises(StudyError):
        register_process(tmp_path / "study")
    assert list(elsewhere.iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to hand a folder to another user")
def test_a_machine_folder_owned_by_another_user_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    folder = tmp_path / f"heretic-{os.getuid()}"
    folder.mkdir(mode=0o700)
    os.chown(folder, 54321, 54321)
    with pytest.raises(StudyError, match="uid 54321"):
        machine_lock_dir()


def test_a_study_folder_everyone_can_write_is_refused(tmp_path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    study.chmod(0o777)
    with pytest.raises(StudyError, match="writable by every user"):
        acquire_run_lock(study)
    study.chmod(0o1777)  # sticky, like /tmp: others cannot replace our files
    check_folder(study)
    with acquire_run_lock(study):
        assert lock_is_held(study / LOCK_NAME)
    assert not lock_is_held(study / LOCK_NAME)


def test_lock_files_are_readable_for_status_but_not_writable_by_others(tmp_path) -> None:
    with acquire_run_lock(tmp_path / "study"):
        mode = stat.S_IMODE((tmp_path / "study" / LOCK_NAME).stat().st_mode)
    assert mode & 0o022 == 0


def test_directions_are_saved_without_a_fixed_temp_name_a_link_could_hold(tmp_path) -> None:
    import torch

    from heretic.engine.directions import Directions
    from heretic.run.study_files import load_directions, save_directions

    study = tmp_path / "study"
    target = _plant(study / ".directions.safetensors.tmp", tmp_path)  # the old temp name
    directions = Directions(torch.ones(3, 1, 4), torch.zeros(3, 4), torch.zeros(3, 4))
    save_directions(study / "directions.safetensors", directions)
    assert target.read_bytes() == PRECIOUS
    loaded = load_directions(study / "directions.safetensors")
    assert loaded is not None and torch.equal(loaded.basis, directions.basis)


def test_a_planted_done_marker_link_is_no_state(tmp_path) -> None:
    from heretic.lifecycle.state import RunState

    target = tmp_path / "elsewhere.json"
    target.write_text('{"finished_at": "never"}')
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "DONE.json").symlink_to(target)
    assert RunState(tmp_path / "study").done_info() is None
