"""GPU and RAM inventory through NVML (nvidia-ml-py) and psutil.

Guaranteed: `read_inventory()` never raises for a missing driver or library; it returns an
inventory with no GPUs and `nvml_error` saying why, which is the CPU-only path. Tests pass a
hand-built `GpuInventory` instead of reading the machine.

Not guaranteed: NVML enumerates every GPU of the machine, ignoring CUDA_VISIBLE_DEVICES;
`visible_gpus` applies that variable (indices or UUIDs). Process lists hold host PIDs, which
differ from a container's own PIDs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType

import psutil

from heretic.jsontypes import JsonDict

GIB = 1024**3


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    total_bytes: int
    free_bytes: int
    processes: list[int] = field(default_factory=list)
    uuid: str = ""
    process_bytes: int = 0

    @property
    def key(self) -> str:
        """Stable machine-wide identity for locks."""
        return self.uuid or f"index{self.index}"


@dataclass(frozen=True)
class GpuInventory:
    gpus: list[GpuInfo] = field(default_factory=list)
    ram_total_bytes: int = 0
    ram_available_bytes: int = 0
    driver: str = ""
    nvml_error: str = ""

    @property
    def cpu_only(self) -> bool:
        return not self.gpus

    def to_dict(self) -> JsonDict:
        return asdict(self)


def _ram() -> tuple[int, int]:
    mem = psutil.virtual_memory()
    return int(mem.total), int(mem.available)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu(pynvml: ModuleType, index: int) -> GpuInfo:
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        procs = []
    used = sum(int(p.usedGpuMemory or 0) for p in procs)
    try:
        uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
    except pynvml.NVMLError:
        uuid = ""
    return GpuInfo(
        index=index,
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        total_bytes=int(mem.total),
        free_bytes=int(mem.free),
        processes=[int(p.pid) for p in procs],
        uuid=uuid,
        process_bytes=used,
    )


def read_inventory() -> GpuInventory:
    """The machine's GPUs and RAM; a clean CPU-only inventory when NVML is unavailable."""
    total, available = _ram()
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py not installed: CPU only
        return GpuInventory([], total, available, nvml_error=f"nvidia-ml-py missing ({exc})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return GpuInventory([], total, available, nvml_error=str(exc) or type(exc).__name__)
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        gpus = [_gpu(pynvml, i) for i in range(pynvml.nvmlDeviceGetCount())]
    except pynvml.NVMLError as exc:
        return GpuInventory([], total, available, nvml_error=str(exc) or type(exc).__name__)
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass
    return GpuInventory(gpus, total, available, driver=driver)


def visible_gpus(
    inventory: GpuInventory, environ: Mapping[str, str] | None = None
) -> list[GpuInfo]:
    """The GPUs CUDA will show this process, in CUDA's order (CUDA_VISIBLE_DEVICES applied)."""
    environ = os.environ if environ is None else environ
    spec = environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return list(inventory.gpus)
    chosen: list[GpuInfo] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                break  # CUDA stops at the first invalid entry
            match = [g for g in inventory.gpus if g.index == int(item)]
        else:
            match = [g for g in inventory.gpus if g.uuid and g.uuid.startswith(item)]
        if not match:
            break
        chosen.append(match[0])
    return chosen


def gpus_for_device_map(
    device_map: str, inventory: GpuInventory, environ: Mapping[str, str] | None = None
) -> list[GpuInfo]:
    """Which GPUs a run with this accelerate device_map will put weights on."""
    visible = visible_gpus(inventory, environ)
    dm = device_map.strip().lower()
    if dm in ("cpu", "disk", "meta") or not visible:
        return []
    if dm in ("cuda", "gpu"):
        return visible[:1]
    if dm.startswith("cuda:") or dm.isdigit():
        index = int(dm.split(":", 1)[1]) if ":" in dm else int(dm)
        return visible[index : index + 1]
    return visible  # auto, balanced, balanced_low_0, sequential: may use every visible GPU
