"""Checks about resources the run needs later: RAM for the export merge, disk, the HF token.

Nothing here prints or stores a token: the token check reports only whether one is present
and whether its form is valid.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from heretic.config.hub_names import TOKEN_ENV, token_problem
from heretic.config.settings import Settings
from heretic.preflight.fit import HEADROOM_FRACTION, PYTHON_OVERHEAD_BYTES, gib
from heretic.preflight.inventory import GIB, GpuInventory
from heretic.preflight.memory import ParamCount, weight_bytes
from heretic.preflight.report import Check, Status

DEMO_BYTES = 64 * 1024**2  # generous for the demo model's weights


def check_merge_ram(settings: Settings, count: ParamCount | None, inventory: GpuInventory) -> Check:
    """A quantized search exports by merging the edit into full-precision weights on CPU."""
    if settings.quantization == "none":
        return Check("RAM (merge)", Status.OK, "not needed (no quantization)", "-")
    if count is None:
        return Check("RAM (merge)", Status.OK, "demo model: a few MB", "-")
    need = weight_bytes(count, "none", "bfloat16") + PYTHON_OVERHEAD_BYTES
    have = int(inventory.ram_total_bytes * (1 - HEADROOM_FRACTION))
    measured = f"{gib(inventory.ram_total_bytes)} RAM"
    if need <= have:
        return Check("RAM (merge)", Status.OK, measured, f"{gib(need)} for the bf16 merge")
    return Check(
        "RAM (merge)",
        Status.FAIL,
        measured,
        f"{gib(need)} for the bf16 merge",
        "the export after a quantized search merges the edit into bf16 weights on the CPU; "
        "rent a machine with more RAM or search in 16 bit",
    )


def _existing(path: Path) -> Path:
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _download_bytes(settings: Settings, count: ParamCount | None) -> int:
    if count is None or settings.model is None:
        return DEMO_BYTES
    if Path(settings.model).expanduser().exists():
        return 0  # local folder: nothing to download
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors.index.json", "model.safetensors"):
        hit = try_to_load_from_cache(settings.model, name, revision=settings.revision)
        if isinstance(hit, str):
            return 0  # in the cache already (shards are assumed complete)
    return weight_bytes(count, "none", "bfloat16")


def check_disk(settings: Settings, count: ParamCount | None, planned: bool = False) -> Check:
    """Free space for the download and the export, per filesystem.

    planned=True (`heretic preflight --gpus`): the run happens on a machine not yet rented, so
    this host's disk says nothing about it; a shortfall is a WARN that names the size to rent.
    """
    download = _download_bytes(settings, count)
    export = weight_bytes(count, "none", settings.export_dtype) if count else DEMO_BYTES
    out_dir, cache_dir = _existing(settings.output), _existing(_hub_cache())
    needs: dict[int, tuple[Path, int]] = {}  # per filesystem: where, bytes
    for path, nbytes in ((cache_dir, download), (out_dir, export)):
        dev = os.stat(path).st_dev
        where, before = needs.get(dev, (path, 0))
        needs[dev] = (where, before + nbytes)
    short, measured = [], []
    for path, nbytes in needs.values():
        free = shutil.disk_usage(path).free
        measured.append(f"{gib(free)} free at {path}")
        if nbytes + GIB > free:
            short.append(f"{path} needs {gib(nbytes + GIB)}")
    need = f"download {gib(download)} + export {gib(export)}"
    if short and planned:
        return Check(
            "disk",
            Status.WARN,
            "; ".join(measured) + " (this host, not the planned machine)",
            need,
            f"rent at least {gib(download + export + GIB)} of disk for the planned machine",
        )
    if short:
        return Check(
            "disk",
            Status.FAIL,
            "; ".join(measured),
            need,
            "; ".join(short) + ": free space or mount a larger volume",
        )
    return Check("disk", Status.OK, "; ".join(measured), need)


def check_token(settings: Settings, environ: Mapping[str, str]) -> Check:
    if not settings.upload:
        return Check("HF token", Status.OK, "not needed (no --upload)", "-")
    # The one rule `heretic run` and `heretic upload` apply too (heretic.config.hub_names).
    token, source = environ.get(TOKEN_ENV), TOKEN_ENV
    problem = token_problem(token)
    need = "a write token (hf_...) in HF_TOKEN"
    if problem == "missing":
        return Check(
            "HF token",
            Status.FAIL,
            "missing",
            need,
            "set HF_TOKEN to a write token from huggingface.co/settings/tokens",
        )
    if problem is not None:
        return Check(
            "HF token",
            Status.FAIL,
            f"from {source}: not a valid token form",
            need,
            "Hugging Face tokens start with hf_ followed by letters and digits; "
            "copy it again without quotes or spaces",
        )
    return Check("HF token", Status.OK, f"present in {source} (form valid)", need)
