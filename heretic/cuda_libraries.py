"""The CUDA libraries a CUDA image ships, checked without a GPU (part of `heretic version --check`).

torch's CUDA wheels bring their CUDA runtime, cuBLAS, cuDNN, NCCL, ... as `nvidia-*` wheels
(shared libraries under site-packages/nvidia/), and bitsandbytes brings one library per CUDA
release. Without a GPU nothing can run on them, but each can still be loaded: a missing
or broken file, or one whose dependencies are missing, fails `dlopen` on any machine. The
driver's own library (libcuda.so.1) comes from the host at run time (`--gpus all`), so a
library that needs it, and an optional transport plugin that needs a system library the
image does not promise (MPI, OpenSHMEM, PMIx, InfiniBand verbs: NCCL's and NVSHMEM's
transports across machines), is
reported as such and not counted as a problem.
Guaranteed: never raises; everything wrong ends up in `problems`.
"""

from __future__ import annotations

import ctypes
import importlib.util
import re
from pathlib import Path

# Libraries loaded only with the host's driver or an optional multi-machine transport.
HOST_PROVIDED = re.compile(
    r"lib(cuda|nvidia-ml|mpi\w*|oshmem|pmix|pmi2?|ibverbs|mlx5|rdmacm|ucp|ucs|fabric)\.so"
)
_SHARED = re.compile(r"\.so(\.\d+)*$")


def _package_dirs(name: str) -> list[Path]:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def nvidia_libraries() -> list[Path]:
    """Every shared library under the `nvidia` namespace package (the nvidia-* wheels)."""
    found = {
        path
        for folder in _package_dirs("nvidia")
        for path in folder.rglob("*.so*")
        if path.is_file() and _SHARED.search(path.name)
    }
    return sorted(found)


def bitsandbytes_library(cuda: str) -> Path | None:
    """bitsandbytes' library for CUDA `cuda` ("13.0" -> libbitsandbytes_cuda130.so), if there."""
    wanted = "libbitsandbytes_cuda" + "".join(cuda.split(".")[:2]) + ".so"
    for folder in _package_dirs("bitsandbytes"):
        if (folder / wanted).is_file():
            return folder / wanted
    return None


def load_all(paths: list[Path]) -> tuple[list[Path], dict[Path, str]]:
    """Load each library (RTLD_GLOBAL, so one found by its soname serves the next); a library
    whose dependency is another one of `paths` loads once that one is in. Returns what loaded
    and, for the rest, dlopen's error."""
    pending = list(paths)
    loaded: list[Path] = []
    errors: dict[Path, str] = {}
    while pending:
        progress = False
        for path in list(pending):
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                errors[path] = str(exc)
                continue
            loaded.append(path)
            errors.pop(path, None)
            pending.remove(path)
            progress = True
        if not progress:
            break
    return loaded, errors


def check(cuda: str, versions: dict[str, str], problems: list[str]) -> None:
    """The libraries of an image built for CUDA `cuda`: present and loadable."""
    bnb = bitsandbytes_library(cuda)
    if bnb is None:
        problems.append(f"bitsandbytes has no library for CUDA {cuda}")
    libraries = nvidia_libraries()
    if not libraries:
        problems.append("no NVIDIA libraries (nvidia-* wheels) are installed")
        return
    loaded, errors = load_all(libraries + ([bnb] if bnb else []))
    host = {p: e for p, e in errors.items() if HOST_PROVIDED.search(e)}
    versions["CUDA libraries"] = (
        f"{len(loaded)} loaded"
        + (f" ({bnb.name} among them)" if bnb and bnb in loaded else "")
        + (
            f"; {len(host)} need the host's driver or an optional transport: "
            + ", ".join(sorted(p.name for p in host))
            if host
            else ""
        )
    )
    for path, error in sorted(errors.items()):
        if path not in host:
            problems.append(f"{path.name} does not load: {error}")
