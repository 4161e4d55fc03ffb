"""The provider-neutral records the cloud commands work with, and the one provider interface.

An `Offer` is something that can be rented now at a price (a Vast.ai machine offer, or a
RunPod GPU type with stock in a cloud tier). An `Instance` is what was rented; it never carries
the environment it was started with, because providers echo secrets there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from heretic.cloud.gpu_kinds import GpuKind
from heretic.cloud.http import PreparedRequest
from heretic.image import DEFAULT_MIN_CUDA

ProviderName = Literal["vast", "runpod"]
# Set by heretic's launchers (`heretic cloud launch`, `monitor --launch`, scripts/launch_*.sh)
# on every instance they create: heretic ends only a machine it launched itself, and counts
# --max-hours from the launch (heretic/lifecycle/retry.py).
LAUNCHED_BY_ENV = "HERETIC_LAUNCHED_BY"
LAUNCHED_AT_ENV = "HERETIC_LAUNCHED_AT"
PROVIDERS: tuple[ProviderName, ...] = ("vast", "runpod")

# Normalised instance states; the provider's own word is kept in Instance.status. "paused":
# the container is not running but the machine (GPU included) is still held and billed
# (Vast's frozen, and Vast's exited: Vast does not restart an exited container and keeps its
# contract, GPU included, until it is stopped or destroyed), unlike "exited", which bills only
# storage (RunPod's EXITED, Vast's stopped). "not_found": the account has no instance with
# that id (ended and deleted, or a wrong id): never read as "billing stopped" for a typo.
State = Literal[
    "pending", "running", "paused", "exited", "failed", "terminated", "not_found", "unknown"
]


@dataclass(frozen=True)
class OfferQuery:
    gpu: GpuKind
    max_price: float | None = None
    num_gpus: int = 1
    min_cuda: str = DEFAULT_MIN_CUDA
    cloud: Literal["SECURE", "COMMUNITY"] = "SECURE"  # RunPod tier
    min_reliability: float = 0.98  # Vast host reliability
    min_disk_gb: int = 0
    limit: int = 20


@dataclass(frozen=True)
class Offer:
    provider: ProviderName
    offer_id: str  # Vast: the ask id; RunPod: the GPU type id
    gpu_name: str
    num_gpus: int
    gpu_ram_gb: float
    price_per_hour: float | None
    availability: str  # Vast: "rentable"; RunPod: LOW, MEDIUM, HIGH (NONE is never an offer)
    location: str = ""
    reliability: float | None = None
    cloud: str = ""


@dataclass(frozen=True)
class LaunchSpec:
    image: str
    env: dict[str, str]
    disk_gb: int
    label: str
    min_cuda: str = DEFAULT_MIN_CUDA
    cloud: Literal["SECURE", "COMMUNITY"] = "SECURE"
    volume_id: str | None = None  # RunPod network volume mounted at /workspace
    data_center_id: str | None = None  # the volume's data center (looked up at launch)
    secrets: tuple[str, ...] = field(default=(), repr=False)  # values to mask when shown


@dataclass(frozen=True)
class Instance:
    provider: ProviderName
    instance_id: str
    status: str  # the provider's own word
    state: State
    gpu_name: str = ""
    price_per_hour: float | None = None
    label: str = ""
    message: str = ""


class Provider(Protocol):
    """What `heretic cloud` needs from a provider; one module per provider implements it."""

    name: ProviderName

    def search_request(self, query: OfferQuery) -> PreparedRequest: ...

    def search(self, query: OfferQuery) -> list[Offer]: ...

    def launch_request(self, offer: Offer, spec: LaunchSpec) -> PreparedRequest: ...

    def launch(self, offer: Offer, spec: LaunchSpec) -> Instance: ...

    def status(self, instance_id: str) -> Instance: ...

    def logs(self, instance_id: str, tail: int = 200) -> str: ...

    def terminate(self, instance_id: str) -> None: ...

    def stop(self, instance_id: str) -> None: ...

    def close(self) -> None: ...
