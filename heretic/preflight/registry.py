"""Which heretic processes are ours, and which of them are stale.

Every run calls `register_process(study_dir)` at start: it writes a record (pid, create_time,
uid, study folder, command line) into a per-user registry folder. A process is *provably ours*
only when a record exists for it AND the live process with that PID has the recorded
create_time (so a reused PID never matches) AND runs as this user AND its command line still
mentions heretic. Nothing else is ever ended: no search by process name, no other users' work.

A provably-ours process other than this one is *stale* for a new run when it still holds the
new run's study folder (its lock), GPU memory (NVML lists its PID), or a GPU lock the new run
needs. `end_processes` terminates, waits, then kills only those.

Not guaranteed: inside containers NVML reports host PIDs, which do not match this namespace's
PIDs, so GPU-memory holders are recognised only when the PID namespaces agree; the study lock
and GPU locks still catch them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import psutil

from heretic.atomic import write_json
from heretic.preflight.lock import LOCK_NAME, machine_lock_dir, probe_lock
from heretic.secrets import safe_cmdline
from heretic.statefiles import private_dir, read_text


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    create_time: float
    uid: int
    study_dir: str
    cmdline: str
    path: Path | None = None


@dataclass(frozen=True)
class StaleProcess:
    record: ProcessRecord
    reasons: tuple[str, ...]

    def describe(self) -> str:
        return f"PID {self.record.pid} ({'; '.join(self.reasons)}): {self.record.cmdline}"


def registry_dir() -> Path:
    return machine_lock_dir() / "runs"


def register_process(study_dir: Path, registry: Path | None = None) -> Path:
    """Record this process as a heretic run on `study_dir`; returns the record file.

    Written atomically (heretic.atomic). Records of dead processes are harmless and
    are removed by the next scan.
    """
    registry = private_dir(registry or registry_dir())
    me = psutil.Process()
    record = {
        "pid": me.pid,
        "create_time": me.create_time(),
        "uid": os.getuid(),
        "study_dir": str(Path(study_dir).resolve()),
        "cmdline": safe_cmdline(sys.argv),
        "registered": time.time(),
    }
    path = registry / f"{me.pid}.json"
    write_json(path, record, indent=None)
    return path


def _load(path: Path) -> ProcessRecord | None:
    try:
        data = json.loads(read_text(path))  # a planted link is no record
        return ProcessRecord(
            pid=int(data["pid"]),
            create_time=float(data["create_time"]),
            uid=int(data["uid"]),
            study_dir=str(data["study_dir"]),
            cmdline=str(data.get("cmdline", "")),
            path=path,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive_and_ours(record: ProcessRecord) -> psutil.Process | None:
    """The live process the record describes, or None (dead, PID reused, other user)."""
    if record.uid != os.getuid():
        return None
    try:
        proc = psutil.Process(record.pid)
        same_start = abs(proc.create_time() - record.create_time) < 0.01
        if not same_start or proc.uids().real != os.getuid():
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not any("heretic" in part for part in proc.cmdline()):
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def live_records(registry: Path | None = None) -> list[ProcessRecord]:
    """Records of our heretic processes still alive (not this one); prunes dead records."""
    registry = registry or registry_dir()
    if not registry.is_dir():
        return []
    live: list[ProcessRecord] = []
    for path in sorted(registry.glob("*.json")):
        record = _load(path)
        if record is None or _alive_and_ours(record) is None:
            if record is None or record.uid == os.getuid():
                path.unlink(missing_ok=True)
            continue
        if record.pid not in _self_and_ancestors():
            live.append(record)
    return live


def _self_and_ancestors() -> set[int]:
    """This process and its parents: never stale, whatever they hold (a run may shell out)."""
    pids = {os.getpid()}
    try:
        pids.update(p.pid for p in psutil.Process().parents())
    except psutil.Error:
        pass
    return pids


def find_stale(
    study_dir: Path,
    *,
    gpu_pids: Collection[int] = (),
    gpu_lock_paths: Collection[Path] = (),
    registry: Path | None = None,
) -> list[StaleProcess]:
    """Our live heretic processes that hold this study, GPU memory, or a GPU lock we need."""
    study = str(Path(study_dir).resolve())
    lock_holder = probe_lock(Path(study) / LOCK_NAME)
    gpu_lock_pids = {h.pid for h in (probe_lock(p) for p in gpu_lock_paths) if h}
    stale: list[StaleProcess] = []
    for record in live_records(registry):
        reasons = []
        if lock_holder and lock_holder.pid == record.pid:
            reasons.append("holds this study's lock")
        elif record.study_dir == study:
            reasons.append("runs on this study folder")
        if record.pid in gpu_pids:
            reasons.append("holds GPU memory")
        if record.pid in gpu_lock_pids:
            reasons.append("holds a GPU this run needs")
        if reasons:
            stale.append(StaleProcess(record, tuple(reasons)))
    return stale


@dataclass(frozen=True)
class EndResult:
    ended: list[int]  # gone, by SIGTERM or SIGKILL
    killed: list[int]  # the subset that needed SIGKILL
    alive: list[int]  # survived both (uninterruptible sleep?)


def end_processes(stale: list[StaleProcess], *, grace_s: float = 10.0) -> EndResult:
    """SIGTERM each (re-verified) stale process, wait `grace_s`, SIGKILL the rest.

    Each record is re-checked just before the signal, so a PID that changed hands in the
    meantime is never touched.
    """
    procs = [p for p in (_alive_and_ours(s.record) for s in stale) if p is not None]
    for proc in procs:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, stubborn = psutil.wait_procs(procs, timeout=grace_s)
    for proc in stubborn:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(stubborn, timeout=5.0)
    alive = {p.pid for p in still}
    for s in stale:
        if s.record.path is not None and s.record.pid not in alive:
            s.record.path.unlink(missing_ok=True)
    return EndResult(
        ended=sorted(p.pid for p in procs if p.pid not in alive),
        killed=sorted(p.pid for p in stubborn if p.pid not in alive),
        alive=sorted(alive),
    )
