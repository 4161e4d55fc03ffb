"""The one offer filter: what `heretic cloud offers`, `launch` and `monitor` ask the providers
for (and what scripts/lib/offers.sh sends for the shell scripts; a test holds the two equal).

Guaranteed: the three commands ask for the same machines, so the monitor never rents an offer
that the launch could not use: the GPU kind, a disk big enough for the run (`--disk`, else
sized from the model, else 150 GB), a CUDA version at least `min_cuda` (a parameter; the
launchers pass the one the image tag's CUDA line needs, heretic/image.py), and the price cap. On Vast the search sends the disk
as `allocated_storage`, so the price (`dph_total`) and the cap include the storage of that
disk, as vast-cli's `search offers --storage` does. Not guaranteed: RunPod's catalog prices are
per GPU only; a pod volume is billed on top (a few cents an hour for 150 GB).
"""

from __future__ import annotations

from heretic.cloud.cost import DEFAULT_DISK_GB, disk_for_params
from heretic.cloud.gpu_kinds import GpuKind
from heretic.cloud.records import OfferQuery
from heretic.image import DEFAULT_MIN_CUDA


def run_disk_gb(disk_gb: int | None = None, n_params: int | None = None) -> int:
    """The disk a run needs: the one asked for, else sized from the model, else the default."""
    if disk_gb:
        return disk_gb
    return disk_for_params(n_params) if n_params else DEFAULT_DISK_GB


def offer_query(
    gpu: GpuKind,
    *,
    max_price: float | None = None,
    disk_gb: int | None = None,
    n_params: int | None = None,
    min_cuda: str = DEFAULT_MIN_CUDA,
    cloud: str = "SECURE",
) -> OfferQuery:
    return OfferQuery(
        gpu=gpu,
        max_price=max_price,
        min_cuda=min_cuda,
        cloud="COMMUNITY" if cloud == "COMMUNITY" else "SECURE",
        min_disk_gb=run_disk_gb(disk_gb, n_params),
    )
