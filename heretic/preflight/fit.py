"""Does an estimate fit a GPU, a set of GPUs, or RAM? One set of rules for `--profile auto`
and for the memory checks, so the two can never disagree.

Rules (estimates, with margins on purpose):
- usable GPU memory = free memory - 10% of the card's total (allocator fragmentation) and
  each GPU in use pays CUDA_CONTEXT_BYTES for the CUDA context and cuBLAS workspaces;
- one GPU: weights + runtime + context <= usable;
- a split (device_map balanced): every GPU holds its share of the weights plus one whole
  block (a layer, the embeddings or lm_head cannot be cut) plus the runtime memory;
- CPU: weights + runtime + PYTHON_OVERHEAD_BYTES <= available RAM - 10% of total RAM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from heretic.preflight.inventory import GIB, GpuInfo, GpuInventory
from heretic.preflight.memory import MemoryEstimate

HEADROOM_FRACTION = 0.10
CUDA_CONTEXT_BYTES = int(0.6 * GIB)
PYTHON_OVERHEAD_BYTES = 2 * GIB


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def usable_gpu_bytes(gpu: GpuInfo) -> int:
    return max(0, min(gpu.free_bytes, gpu.total_bytes) - int(HEADROOM_FRACTION * gpu.total_bytes))


def usable_ram_bytes(inventory: GpuInventory) -> int:
    return max(
        0, inventory.ram_available_bytes - int(HEADROOM_FRACTION * inventory.ram_total_bytes)
    )


@dataclass(frozen=True)
class Fit:
    fits: bool
    need_bytes: int  # on the tightest device (per GPU for a split)
    usable_bytes: int  # on that device
    where: str

    def describe(self) -> str:
        return f"needs {gib(self.need_bytes)} {self.where}, {gib(self.usable_bytes)} usable"


def single_gpu_need(mem: MemoryEstimate) -> int:
    return mem.total_bytes + CUDA_CONTEXT_BYTES


def split_gpu_need(mem: MemoryEstimate, n: int) -> int:
    share = -(-mem.weights_bytes // max(n, 1))
    return share + mem.largest_block_bytes + mem.runtime_bytes + CUDA_CONTEXT_BYTES


def fit_single(mem: MemoryEstimate, gpu: GpuInfo) -> Fit:
    need, usable = single_gpu_need(mem), usable_gpu_bytes(gpu)
    return Fit(need <= usable, need, usable, f"on GPU {gpu.index} ({gpu.name})")


def best_single(mem: MemoryEstimate, gpus: Sequence[GpuInfo]) -> Fit | None:
    """The fit on the GPU with the most usable memory (None without GPUs)."""
    if not gpus:
        return None
    return fit_single(mem, max(gpus, key=usable_gpu_bytes))


def fit_split(mem: MemoryEstimate, gpus: Sequence[GpuInfo]) -> Fit:
    if len(gpus) <= 1:
        return fit_single(mem, gpus[0]) if gpus else Fit(False, mem.total_bytes, 0, "on no GPU")
    need = split_gpu_need(mem, len(gpus))
    usable = min(usable_gpu_bytes(g) for g in gpus)
    return Fit(need <= usable, need, usable, f"per GPU over {len(gpus)} GPUs")


def fit_ram(mem: MemoryEstimate, inventory: GpuInventory) -> Fit:
    need, usable = mem.total_bytes + PYTHON_OVERHEAD_BYTES, usable_ram_bytes(inventory)
    return Fit(need <= usable, need, usable, "in CPU RAM")


@dataclass(frozen=True)
class CommonGpu:
    label: str
    total_bytes: int

    def as_gpu(self, index: int = 0) -> GpuInfo:
        # a fresh card: the driver keeps ~0.5 GiB back
        return GpuInfo(index, self.label, self.total_bytes, self.total_bytes - GIB // 2)


# Cards people rent, by memory class (total bytes as NVML reports them).
COMMON_GPUS = (
    CommonGpu("24 GB (RTX 3090/4090, L4, A10)", 24564 * 1024**2),
    CommonGpu("48 GB (RTX A6000, L40S, A40)", 46068 * 1024**2),
    CommonGpu("80 GB (A100 80GB, H100)", 81559 * 1024**2),
    CommonGpu("141 GB (H200)", 143771 * 1024**2),
)
COMMON_COUNTS = (1, 2, 4, 8)


def smallest_gpu_set(
    mem_single: MemoryEstimate, mem_split: MemoryEstimate, *, single_only: bool = False
) -> str | None:
    """The common GPU set with the least total memory that holds the model, as words."""
    counts = (1,) if single_only else COMMON_COUNTS
    options = sorted(
        ((card.total_bytes * n, card, n) for card in COMMON_GPUS for n in counts),
        key=lambda t: t[0],
    )
    for _, card, n in options:
        gpus = [card.as_gpu(i) for i in range(n)]
        fit = fit_single(mem_single, gpus[0]) if n == 1 else fit_split(mem_split, gpus)
        if fit.fits:
            return f"{n}x {card.label}" + (" split with device_map balanced" if n > 1 else "")
    return None


def planned_inventory(spec: str, base: GpuInventory) -> GpuInventory:
    """A hypothetical machine for `heretic preflight --gpus NxGB` (e.g. 1x80, 4x24): fresh
    cards of that common memory class, and `base`'s RAM (the planning machine's own)."""
    from heretic.errors import ConfigError

    count, _, size = spec.strip().lower().partition("x")
    cards = {card.label.split()[0]: card for card in COMMON_GPUS}
    if not count.isdigit() or int(count) < 1 or size.removesuffix("gb") not in cards:
        raise ConfigError(
            f"--gpus {spec!r} is not a GPU set heretic knows.",
            f"Write COUNTxGB with GB one of {', '.join(cards)}, e.g. --gpus 1x80 or --gpus 4x24.",
        )
    card = cards[size.removesuffix("gb")]
    gpus = [replace(card.as_gpu(i), uuid=f"planned-{i}") for i in range(int(count))]
    return GpuInventory(gpus, base.ram_total_bytes, base.ram_available_bytes, driver="planned")
