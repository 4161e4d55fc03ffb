"""Stale heretic processes: found only when provably ours, ended by terminate-wait-kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil

from heretic.config.settings import Settings
from heretic.preflight.checklist import run_preflight
from heretic.preflight.inventory import GpuInventory
from heretic.preflight.registry import (
    end_processes,
    find_stale,
    live_records,
    register_process,
)

# A "heretic run" stand-in: takes the study lock, registers itself, then ignores SIGTERM
# when asked to (so the test sees the SIGKILL step).
RUN = """
import signal, sys
from pathlib import Path
from heretic.preflight.lock import acquire_run_lock
from heretic.preflight.registry import register_process
study, registry, stubborn = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
if stubborn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
lock = acquire_run_lock(study)
register_process(study, registry)
print("ready", flush=True)
sys.stdin.readline()
"""


def _start(study: Path, registry: Path, stubborn: bool = False) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", RUN, str(study), str(registry), "1" if stubborn else "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def test_registered_holder_of_our_study_is_stale_and_ended(tmp_path: Path) -> None:
    registry, study = tmp_path / "registry", tmp_path / "study"
    proc = _start(study, registry, stubborn=True)
    try:
        stale = find_stale(study, registry=registry)
        assert [s.record.pid for s in stale] == [proc.pid]
        assert "holds this study's lock" in stale[0].reasons
        result = end_processes(stale, grace_s=0.5)  # SIGTERM is ignored -> SIGKILL
        assert result.ended == [proc.pid] and result.alive == []
        assert result.killed == [proc.pid]
        assert not psutil.pid_exists(proc.pid)
        assert find_stale(study, registry=registry) == []
    finally:
        _stop(proc)


def test_polite_process_ends_with_sigterm(tmp_path: Path) -> None:
    registry, study = tmp_path / "registry", tmp_path / "study"
    proc = _start(study, registry)
    try:
        result = end_processes(find_stale(study, registry=registry), grace_s=10)
        assert result.ended == [proc.pid] and result.killed == []
    finally:
        _stop(proc)


def test_runs_on_other_studies_are_not_stale_unless_they_hold_our_gpu(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    proc = _start(tmp_path / "other-study", registry)
    try:
        assert find_stale(tmp_path / "study", registry=registry) == []
        stale = find_stale(tmp_path / "study", gpu_pids={proc.pid}, registry=registry)
        assert [s.record.pid for s in stale] == [proc.pid]
        assert stale[0].reasons == ("holds GPU memory",)
    finally:
        _stop(proc)


def test_unprovable_records_are_never_matched(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    # a live process of ours that is not heretic, with a forged record: wrong create_time
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE
    )
    try:
        forged = {
            "pid": sleeper.pid,
            "create_time": 1.0,
            "uid": os.getuid(),
            "study_dir": str((tmp_path / "study").resolve()),
            "cmdline": "heretic run",
        }
        (registry / f"{sleeper.pid}.json").write_text(json.dumps(forged))
        # the right create_time, but its command line is not heretic's
        right = dict(forged, create_time=psutil.Process(sleeper.pid).create_time())
        (registry / "copy.json").write_text(json.dumps(right))
        # another user's record
        (registry / "other.json").write_text(json.dumps(dict(right, uid=os.getuid() + 1)))
        assert find_stale(tmp_path / "study", gpu_pids={sleeper.pid}, registry=registry) == []
        assert sleeper.poll() is None
        assert not (registry / f"{sleeper.pid}.json").exists()  # pruned
        assert (registry / "other.json").exists()  # other users' records are left alone
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)


def test_this_process_is_never_stale(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    path = register_process(tmp_path / "study", registry)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert live_records(registry) == []
    assert find_stale(tmp_path / "study", gpu_pids={os.getpid()}, registry=registry) == []


def test_preflight_reports_then_kills_stale(tmp_path: Path) -> None:
    registry, output = tmp_path / "registry", tmp_path / "out"
    proc = _start(output / "study", registry)
    inventory = GpuInventory([], 16 * 1024**3, 8 * 1024**3, nvml_error="no driver")
    try:
        report = run_preflight(
            Settings(output=output),
            inventory=inventory,
            environ={},
            registry=registry,
            lock_dir=tmp_path / "locks",
        )
        by_name = {c.name: c for c in report.checks}
        assert by_name["stale processes"].status.value == "FAIL"
        assert str(proc.pid) in by_name["stale processes"].measured
        assert "--kill-stale" in by_name["stale processes"].detail
        assert by_name["study lock"].status.value == "FAIL"
        report = run_preflight(
            Settings(output=output, kill_stale=True),
            inventory=inventory,
            environ={},
            registry=registry,
            lock_dir=tmp_path / "locks",
        )
        by_name = {c.name: c for c in report.checks}
        assert by_name["stale processes"].status.value == "OK"
        assert f"ended PID(s) [{proc.pid}]" in by_name["stale processes"].measured
        assert by_name["study lock"].status.value == "OK"
        assert not report.failed
    finally:
        _stop(proc)
