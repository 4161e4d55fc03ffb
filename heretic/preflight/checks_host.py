"""Checks about the machine and other processes: study lock, stale runs, GPUs, GPU locks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from heretic.preflight.fit import gib
from heretic.preflight.inventory import GpuInfo, GpuInventory
from heretic.preflight.lock import LOCK_NAME, gpu_lock_path, probe_lock
from heretic.preflight.registry import end_processes, find_stale, live_records
from heretic.preflight.report import Check, Status


def check_stale(
    study_dir: Path,
    inventory: GpuInventory,
    gpus: Sequence[GpuInfo],
    kill: bool,
    registry: Path | None = None,
    lock_dir: Path | None = None,
) -> Check:
    gpu_pids = {pid for g in inventory.gpus for pid in g.processes}
    stale = find_stale(
        study_dir,
        gpu_pids=gpu_pids,
        gpu_lock_paths=[gpu_lock_path(g.key, lock_dir) for g in gpus],
        registry=registry,
    )
    others = len(live_records(registry)) - len(stale)
    other_note = (
        f"; {others} other heretic run(s) of yours share nothing with this one" if others else ""
    )
    if not stale:
        return Check("stale processes", Status.OK, "none" + other_note, "none")
    listed = "; ".join(s.describe() for s in stale)
    if not kill:
        return Check(
            "stale processes",
            Status.FAIL,
            f"{len(stale)} earlier heretic process(es): {listed}",
            "none",
            "end them with --kill-stale (only these, which heretic registered itself)",
        )
    result = end_processes(stale)
    if result.alive:
        return Check(
            "stale processes",
            Status.FAIL,
            f"could not end PID(s) {result.alive}",
            "none",
            "they survived SIGTERM and SIGKILL (uninterruptible I/O?); check them by hand",
        )
    return Check("stale processes", Status.OK, f"ended PID(s) {result.ended}" + other_note, "none")


def check_study_lock(study_dir: Path) -> Check:
    holder = probe_lock(Path(study_dir) / LOCK_NAME)
    if holder is None:
        return Check("study lock", Status.OK, f"{study_dir} is free", "no other run on it")
    if holder.pid == os.getpid():
        return Check("study lock", Status.OK, "held by this run", "no other run on it")
    return Check(
        "study lock",
        Status.FAIL,
        f"{study_dir} is in use by {holder.describe()}",
        "no other run on it",
        "wait for it, choose another --output/--study-dir, or --kill-stale if it is stale",
    )


def _gpu_line(g: GpuInfo) -> str:
    used = f", {len(g.processes)} process(es)" if g.processes else ""
    return f"{g.index}: {g.name} {gib(g.free_bytes)} free of {gib(g.total_bytes)}{used}"


def check_gpus(inventory: GpuInventory, used: Sequence[GpuInfo]) -> Check:
    if inventory.cpu_only:
        why = inventory.nvml_error or "NVML lists no GPU"
        return Check("GPUs", Status.OK, f"none: CPU only ({why})", "GPU optional")
    measured = "; ".join(_gpu_line(g) for g in inventory.gpus)
    busy = [g for g in used if g.processes]
    if busy:
        return Check(
            "GPUs",
            Status.WARN,
            measured,
            "the GPUs this run uses idle",
            "other processes hold memory on GPU(s) "
            + ", ".join(f"{g.index} (PIDs {g.processes})" for g in busy)
            + "; the memory check counts only what is free now",
        )
    return Check("GPUs", Status.OK, measured, "the GPUs this run uses idle")


def check_gpu_locks(gpus: Sequence[GpuInfo], lock_dir: Path | None = None) -> Check:
    if not gpus:
        return Check("GPU locks", Status.OK, "no GPU used", "no other run on our GPUs")
    taken = []
    for g in gpus:
        holder = probe_lock(gpu_lock_path(g.key, lock_dir))
        if holder is not None and holder.pid != os.getpid():
            taken.append(f"GPU {g.index} by {holder.describe()}")
    if taken:
        return Check(
            "GPU locks",
            Status.FAIL,
            "; ".join(taken),
            "no other run on our GPUs",
            "wait for that run, pick free GPUs with CUDA_VISIBLE_DEVICES, or --kill-stale",
        )
    return Check(
        "GPU locks", Status.OK, f"GPU(s) {[g.index for g in gpus]} free", "no other run on our GPUs"
    )
