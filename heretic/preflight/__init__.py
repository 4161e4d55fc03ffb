"""Preflight: refuse to start a run that cannot finish, in seconds, before any weight loads.

Public entry points (import from the submodules; this package imports nothing heavy so that
`heretic.preflight.lock` stays instant):
- lock.acquire_run_lock(study_dir) -> RunLock; lock.acquire_gpu_locks(keys) -> RunLock
- registry.register_process(study_dir); registry.find_stale / end_processes
- inventory.read_inventory() -> GpuInventory; inventory.gpus_for_device_map(...)
- memory.count_parameters(model, revision, trust_remote_code) -> ParamCount;
  memory.estimate_memory(count, ...) -> MemoryEstimate
- profiles_auto.choose_profile(estimate, inventory, model_is_demo) -> ProfileChoice
- resolve.resolve_settings(cli_layer, config_path=..., environ=...) -> Resolved
- run_preflight(settings, inventory=..., environ=..., for_run=...) -> PreflightReport
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from heretic.preflight.checklist import run_preflight as run_preflight

__all__ = ["run_preflight"]


def __getattr__(name: str) -> object:
    if name == "run_preflight":
        from heretic.preflight.checklist import run_preflight

        return run_preflight
    raise AttributeError(name)
