"""The dtype a CPU-only run should load: bfloat16 only where this CPU runs it fast.

bf16 halves the RAM against float32, but a CPU without bf16 instructions emulates it: a
135M-parameter model's residual pass took 9x longer in bf16 than in float32 on such a machine.
So `dtype = "auto"` on a CPU-only run is decided here, from the CPU's flags (avx512_bf16,
amx_bf16 in /proc/cpuinfo) and a short measurement (one decoder block's forward in both
dtypes, a fraction of a second on an idle machine): bf16 when it is no slower than float32 by BF16_SLACK, or when only bf16
fits the RAM; else float32. The choice is measured once per process. Flags alone are not
trusted: some kernels (norms, softmax) are emulated even where bf16 matmuls are native.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from heretic.config.settings import Settings
from heretic.preflight.report import Check, Status

if TYPE_CHECKING:  # imported when measuring: this module must import fast
    import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
BF16_SLACK = 1.15  # bf16 may be this much slower and still win (half the memory traffic/RAM)


@dataclass(frozen=True)
class CpuDtype:
    dtype: str  # "bfloat16" or "float32"
    bf16_slowdown: float  # bf16 time / float32 time (measured)
    flags: tuple[str, ...]  # the bf16 flags the CPU has

    def reason(self) -> str:
        flags = ", ".join(self.flags) if self.flags else f"no {'/'.join(BF16_FLAGS)}"
        speed = (
            f"a bf16 decoder block runs {self.bf16_slowdown:.1f}x slower than float32"
            if self.bf16_slowdown >= 1
            else f"a bf16 decoder block runs {1 / self.bf16_slowdown:.1f}x faster than float32"
        )
        return f"{speed} here (measured; CPU flags: {flags})"


def on_cpu_only(device_map: str, gpu_count: int) -> bool:
    return device_map == "cpu" or gpu_count == 0


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    words = set(text.split())
    return tuple(f for f in BF16_FLAGS if f in words)


def _block(
    x: torch.Tensor,
    w_qkv: torch.Tensor,
    w_o: torch.Tensor,
    w_up: torch.Tensor,
    w_down: torch.Tensor,
) -> torch.Tensor:  # x (b, s, d): one decoder block, the ops a model runs
    import torch.nn.functional as F

    b, s, d = x.shape
    h = x * (x.float().pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt().to(x.dtype)  # RMS norm
    q, k, v = (h @ w_qkv).view(b, s, 3, 8, d // 8).permute(2, 0, 3, 1, 4)
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, d)
    x = x + attn @ w_o
    gate, up = (x @ w_up).chunk(2, dim=-1)
    return x + (F.silu(gate) * up) @ w_down


def _inputs(dtype_name: str, d: int) -> list[torch.Tensor]:
    import torch

    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, dtype_name)
    shapes = [(4, 64, d), (d, 3 * d), (d, d), (d, 6 * d), (3 * d, d)]
    return [(torch.randn(*s, generator=gen) / s[-2] ** 0.5).to(dtype) for s in shapes]


def _slowdown(d: int = 256, reps: int = 9) -> float:
    """bf16 time / float32 time of a decoder block's forward (batch 4 x 64 tokens, hidden d).
    Matmuls alone flatter bf16; the norms, softmax and elementwise ops are where emulation
    costs. The two dtypes alternate and each keeps its best time, so a busy machine (other
    processes taking the cores for a moment) skews neither."""
    import torch

    inputs = {name: _inputs(name, d) for name in ("float32", "bfloat16")}
    best = {name: float("inf") for name in inputs}
    with torch.inference_mode():
        for args in inputs.values():
            for _ in range(2):
                _block(*args)  # warm-up: the first calls pay for kernel selection
        for _ in range(reps):
            for name, args in inputs.items():
                start = time.perf_counter()
                _block(*args)
                best[name] = min(best[name], time.perf_counter() - start)
    return max(best["bfloat16"], 1e-9) / max(best["float32"], 1e-9)


def decide(slowdown: float, flags: tuple[str, ...], fits_float32: bool = True) -> CpuDtype:
    fast = slowdown <= BF16_SLACK
    return CpuDtype("bfloat16" if fast or not fits_float32 else "float32", slowdown, flags)


@lru_cache(maxsize=1)
def measure() -> tuple[float, tuple[str, ...]]:
    """(bf16 time / float32 time, bf16 flags), once per process."""
    return _slowdown(), cpu_flags()


def choose_cpu_dtype(fits_float32: bool = True) -> CpuDtype:
    slowdown, flags = measure()
    return decide(slowdown, flags, fits_float32)


def check_cpu_dtype(settings: Settings, gpu_count: int) -> Check | None:
    """The preflight row for a CPU-only run: which dtype loads and why (None on a GPU run)."""
    if not on_cpu_only(settings.device_map, gpu_count) or settings.quantization != "none":
        return None
    best = choose_cpu_dtype()
    need = "the faster of bfloat16 / float32 (auto measures it)"
    if settings.dtype in (best.dtype, "float32"):
        return Check("CPU dtype", Status.OK, f"{settings.dtype}: {best.reason()}", need)
    return Check(
        "CPU dtype",
        Status.WARN,
        f"{settings.dtype}: {best.reason()}",
        need,
        f"set --dtype {best.dtype} (or auto) for a faster run, if it fits the RAM",
    )
