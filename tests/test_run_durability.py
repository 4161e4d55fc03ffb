"""End-to-end on the demo model: a disk that fills during the search and a journal whose last
record was cut do not lose the study; the same command resumes and ends with exactly N."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from test_run_cli import completed_in_journal, progress_completed, run_cli, start_cli, wait_for
from test_study_durability import fill

from heretic.engine.journal import JOURNAL_FILE

# Any trial is acceptable: these tests are about the study, not about the edit's quality.
ANY_TRIAL = ["--set", "kl_cap=100", "--set", "refusal_cap=1000", "--set", "max_refusal_share=1"]


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 30 MB tmpfs the test mounts (root and mount(2) needed; skipped where they are not)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_during_the_search_stops_with_15_and_resumes(
    demo_model_dir, cli_env, small_disk
) -> None:
    out, n = small_disk / "out", 8
    # Preflight asks a gigabyte of the output disk for any model; this disk has 30 MB.
    args = ["run", "--trials", str(n), "--output", str(out), *ANY_TRIAL]
    args.append("--skip-preflight")
    proc = start_cli(args, cli_env)
    wait_for(lambda: progress_completed(out / "study") >= 2, proc=proc, timeout=300)
    filler = fill(small_disk, leave=0)  # every byte: the next journal append hits ENOSPC
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 15, err[-3000:]
    assert "Internal error" not in err
    stopped_at = len(completed_in_journal(out / "study"))  # Optuna skips a torn tail
    assert stopped_at < n

    filler.unlink()
    again = run_cli(args, cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(completed_in_journal(out / "study")) == n
    assert (out / "model" / "config.json").is_file()


def test_a_journal_cut_in_its_last_record_is_repaired_and_the_run_ends_with_n(
    demo_model_dir, cli_env, tmp_path
) -> None:
    out, n = tmp_path / "out", 6
    args = ["run", "--trials", str(n), "--output", str(out), *ANY_TRIAL]
    proc = start_cli(args, cli_env)
    wait_for(lambda: progress_completed(out / "study") >= 2, proc=proc, timeout=300)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    journal = out / "study" / JOURNAL_FILE
    data = journal.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    journal.write_bytes(data[: last + (len(data) - last) // 2])  # power lost mid-write

    again = run_cli(args, cli_env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "torn record" in again.stderr
    assert len(completed_in_journal(out / "study")) == n
    kept = list((out / "study").glob("journal.log.torn-*"))
    assert len(kept) == 1 and kept[0].read_bytes() == data[last : last + (len(data) - last) // 2]
