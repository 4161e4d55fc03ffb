"""`run_preflight`: every check, in order, into one report. Never raises for a bad model or
machine: those become FAIL checks; the caller decides (the CLI exits non-zero, `heretic run`
raises PreflightError with `report.summary()`).

Side effect: with settings.kill_stale, stale heretic processes of this user that hold this
study, its GPUs or GPU memory are ended (see `heretic.preflight.registry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from heretic.config.settings import Settings
from heretic.preflight.checks_host import (
    check_gpu_locks,
    check_gpus,
    check_stale,
    check_study_lock,
)
from heretic.preflight.checks_judge import check_judge
from heretic.preflight.checks_model import (
    check_batch,
    check_device_map,
    check_memory,
    check_model,
    check_profile,
    estimate_dict,
)
from heretic.preflight.checks_resources import check_disk, check_merge_ram, check_token
from heretic.preflight.cpu_dtype import check_cpu_dtype
from heretic.preflight.inventory import GpuInventory, gpus_for_device_map, read_inventory
from heretic.preflight.memory import estimate_for_settings
from heretic.preflight.report import PreflightReport
from heretic.preflight.storage import storage_check_row


def run_preflight(
    settings: Settings,
    *,
    inventory: GpuInventory | None = None,
    environ: Mapping[str, str] | None = None,
    for_run: bool = True,
    registry: Path | None = None,
    lock_dir: Path | None = None,
) -> PreflightReport:
    """Check that a run with `settings` can start and finish on this machine.

    `settings` are the resolved ones (profile layer included, see `resolve_settings`).
    for_run=True: called by `heretic run` after it took the study lock, so a lock held by this
    process counts as OK. for_run=False (`heretic preflight`) runs the same checks.
    `registry` and `lock_dir` override the per-user folders (tests).
    """
    inventory = inventory if inventory is not None else read_inventory()
    environ = os.environ if environ is None else environ
    study = settings.resolved_study_dir
    gpus = gpus_for_device_map(settings.device_map, inventory, environ)
    report = PreflightReport()
    checks = report.checks
    checks.append(check_stale(study, inventory, gpus, settings.kill_stale, registry, lock_dir))
    checks.append(check_study_lock(study))
    checks.append(check_gpus(inventory, gpus))
    checks.append(check_gpu_locks(gpus, lock_dir))
    model_check, count = check_model(settings)
    checks.append(model_check)
    profile_check, report.profile = check_profile(settings, count, inventory, environ)
    checks.append(profile_check)
    mem = estimate_for_settings(count, settings) if count is not None else None
    report.estimate = estimate_dict(count, mem)
    checks.append(check_memory(settings, count, mem, gpus, inventory))
    checks.append(check_device_map(settings, gpus))
    checks.append(check_batch(settings))
    dtype_check = check_cpu_dtype(settings, len(inventory.gpus))
    if dtype_check is not None:
        checks.append(dtype_check)
    checks.append(check_merge_ram(settings, count, inventory))
    checks.append(check_disk(settings, count, planned=inventory.driver == "planned"))
    checks.append(check_token(settings, environ))
    checks.append(storage_check_row(settings.storage))
    checks.append(check_judge(settings, mem, gpus, inventory))
    return report
