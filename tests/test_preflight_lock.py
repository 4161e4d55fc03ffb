"""The study lock with real processes: fail fast naming the holder, survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heretic.errors import LockedError
from heretic.preflight.lock import (
    LOCK_NAME,
    acquire_gpu_locks,
    acquire_run_lock,
    gpu_lock_path,
    probe_lock,
)

HOLDER = """
import sys
from pathlib import Path
from heretic.preflight.lock import acquire_run_lock
lock = acquire_run_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.readline()  # hold until the test closes stdin or kills us
"""

TRY = """
import sys, time
from pathlib import Path
from heretic.errors import LockedError
from heretic.preflight.lock import acquire_run_lock
start = time.monotonic()
try:
    acquire_run_lock(Path(sys.argv[1]))
except LockedError as exc:
    print(f"LOCKED {time.monotonic() - start:.3f} {exc.paragraph()}", flush=True)
    sys.exit(8)
print("ACQUIRED", flush=True)
"""


def _start_holder(study: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(study)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # blocks until the lock is held
    return proc


def _try(study: Path) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", TRY, str(study)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout, time.monotonic() - start


def test_second_run_fails_fast_naming_pid_and_sigkill_frees_lock(tmp_path: Path) -> None:
    study = tmp_path / "study"
    holder = _start_holder(study)
    try:
        code, out, _ = _try(study)
        assert code == 8, out
        # the lock attempt itself (after imports) takes far under two seconds
        assert out.startswith("LOCKED ")
        assert float(out.split()[1]) < 2.0
        assert f"PID {holder.pid}" in out
        assert "-c" in out  # the holder's command line is named
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    code, out, _ = _try(study)
    assert code == 0 and out.strip() == "ACQUIRED", out


def test_lock_in_process_context_manager_and_probe(tmp_path: Path) -> None:
    study = tmp_path / "nested" / "study"
    assert probe_lock(study / LOCK_NAME) is None  # probing never creates the folder
    assert not study.exists()
    with acquire_run_lock(study) as lock:
        holder = probe_lock(study / LOCK_NAME)
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(LockedError) as err:
            acquire_run_lock(study)  # a second descriptor, even in this process, is refused
        assert str(os.getpid()) in err.value.message
        assert lock.held
    assert probe_lock(study / LOCK_NAME) is None
    lock.release()  # idempotent
    acquire_run_lock(study).release()


def test_stale_lock_content_is_harmless(tmp_path: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    (study / LOCK_NAME).write_text('{"pid": 999999, "cmdline": "dead run"}')
    with acquire_run_lock(study):
        assert f'"pid": {os.getpid()}' in (study / LOCK_NAME).read_text()


def test_gpu_locks_all_or_none(tmp_path: Path) -> None:
    first = acquire_gpu_locks(["GPU-aaa", "GPU-bbb"], lock_dir=tmp_path)
    try:
        with pytest.raises(LockedError) as err:
            acquire_gpu_locks(["GPU-ccc", "GPU-bbb"], lock_dir=tmp_path)
        assert "GPU-bbb" in err.value.message
        # the failed attempt released the GPU it had already locked
        assert probe_lock(gpu_lock_path("GPU-ccc", tmp_path)) is None
    finally:
        first.release()
    acquire_gpu_locks(["GPU-bbb"], lock_dir=tmp_path).release()


def test_unwritable_study_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LockedError) as err:
        acquire_run_lock(blocker / "study")
    assert "Cannot create the study folder" in err.value.message


def test_lock_file_and_message_never_show_the_webhook_url(tmp_path: Path) -> None:
    study = tmp_path / "study"
    secret = "https://hooks.example.test/services/T0/B0/SeCrEt"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(study), "--notify", secret, f"--notify={secret}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        content = (study / LOCK_NAME).read_text()
        assert "SeCrEt" not in content and "--notify ****" in content
        code, out, _ = _try(study)
        assert code == 8 and f"PID {holder.pid}" in out and "SeCrEt" not in out
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
