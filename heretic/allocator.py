"""The C allocator's policy for large blocks, set once before a model is loaded.

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB on
64-bit), so after the first passes the per-answer logits and log-probs (tens of MB each, freed
row by row) come from the heap, which the allocator keeps resident after they are freed.
Measured on the Qwen2.5 0.5B shape (152k vocabulary, benchmarks/bench_memory.py, torch 2.13.0
CPU): the answer damage's reference build grew the resident size by 1.5 GB after the KL and
refusal passes while torch itself never held more than 98 MiB; with the threshold pinned at
1 MiB, 0.34 GB, in the same time. Pinning it (mallopt) also stops the dynamic adjustment, so
blocks of 1 MiB and more are always mapped and given back on free. The kernel's OOM killer
judges the resident size, which the preflight's estimate is compared against.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

MMAP_THRESHOLD_BYTES = 1 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h

_pinned = False


def pin_mmap_threshold() -> bool:
    """Pin glibc's mmap threshold (once per process); False where the C library is not glibc
    or refuses (nothing changes then)."""
    global _pinned
    if _pinned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _pinned = int(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) == 1
    return _pinned
