"""GPU kinds the cloud commands understand, and each provider's names for them.

A kind (`A100-80GB`) maps to Vast.ai `gpu_name` values plus a minimum `gpu_ram` (Vast names
do not tell an A100 40GB from an 80GB), to RunPod GPU type ids (from RunPod's published list of
GPU types; none for a kind RunPod does not rent), and to a memory bandwidth
used only by the rough run-time estimate. Bandwidths are the vendors' datasheet figures for
the slower variant of each kind, so estimates err long rather than short.
"""

from __future__ import annotations

from dataclasses import dataclass

from heretic.errors import CloudError


@dataclass(frozen=True)
class GpuKind:
    name: str
    memory_gb: float
    bandwidth_gb_s: float
    vast_names: tuple[str, ...]
    vast_min_ram_mb: int
    runpod_ids: tuple[str, ...]


GPU_KINDS: dict[str, GpuKind] = {
    k.name: k
    for k in (
        GpuKind(
            "A100-80GB",
            80,
            1935,
            ("A100 SXM4", "A100 PCIE", "A100X"),
            79000,
            ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
        ),
        # RunPod lists no A100 40GB (its published GPU types, runpod/docs
        # references/gpu-types.mdx, 2026-08-18): Vast only.
        GpuKind("A100-40GB", 40, 1555, ("A100 SXM4", "A100 PCIE"), 39000, ()),
        GpuKind(
            "H100-80GB",
            80,
            2000,
            ("H100 SXM", "H100 PCIE"),
            79000,
            ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"),
        ),
        GpuKind("H100-NVL", 94, 3900, ("H100 NVL",), 90000, ("NVIDIA H100 NVL",)),
        GpuKind(
            "H200", 141, 4800, ("H200", "H200 NVL"), 139000, ("NVIDIA H200", "NVIDIA H200 NVL")
        ),
        GpuKind("L40S", 48, 864, ("L40S",), 45000, ("NVIDIA L40S",)),
        GpuKind("RTX-4090", 24, 1008, ("RTX 4090",), 23000, ("NVIDIA GeForce RTX 4090",)),
    )
}


def gpu_kind(name: str) -> GpuKind:
    """Look a kind up by name, case- and separator-insensitively (a100-80gb, A100_80GB)."""
    wanted = name.strip().upper().replace("_", "-").replace(" ", "-")
    for kind in GPU_KINDS.values():
        if kind.name.upper() == wanted:
            return kind
    raise CloudError(
        f"Unknown GPU kind '{name}'.",
        "Choose one of: " + ", ".join(GPU_KINDS) + ".",
    )
