"""The heretic container image: which CUDA line it is built for, and what follows from that.

One setting, the CUDA line, decides four things that must never disagree:
- the lock the Dockerfile installs with (`image-constraints-<line>.txt`, written by
  scripts/lock_image.sh: every package at its exact version, torch at its exact build),
- where torch comes from (`torch_index_url`; empty: PyPI, whose torch 2.13.0 for Linux is the
  CUDA 13.0 build, so the cu130 image is built from PyPI alone),
- the image tag suffix (`ghcr.io/heretic-llm/heretic:<version>-<line>`),
- the host CUDA version the launchers ask the providers for (Vast `cuda_max_good`, RunPod
  `gpu.minCudaVersion`): a host whose driver supports an older CUDA cannot run the image.

PyTorch 2.12 and 2.13 publish CUDA wheels for two lines only: cu126 ("legacy": drivers R525+,
Volta to Hopper, what most rented A100/H100 hosts have) and cu130 ("stable": drivers R580+,
Blackwell). `cpu` is the local test build (scripts/test_image.sh), never published.
The Dockerfile holds the same mapping in a shell `case` (it cannot import this module);
tests/test_image.py checks that it, the docker workflow and the locks agree with this module.
`heretic version --check` asks torch itself (`torch.version.cuda`) for its line, not the local
version label, which PyPI's build does not carry.
"""

from __future__ import annotations

from dataclasses import dataclass

from heretic import __version__

REPOSITORY = "ghcr.io/heretic-llm/heretic"


@dataclass(frozen=True)
class CudaLine:
    name: str  # the tag suffix and the Dockerfile's CUDA_LINE value
    torch_index_url: str  # "" = PyPI
    min_host_cuda: str | None  # what a provider's host must support; None: no GPU needed
    drivers: str  # for messages and docs
    published: bool = True


LINES: dict[str, CudaLine] = {
    line.name: line
    for line in (
        CudaLine(
            "cu126",
            "https://download.pytorch.org/whl/cu126",
            "12.6",
            "NVIDIA driver R525 or newer (Volta to Hopper: V100, A100, H100, RTX 30/40)",
        ),
        CudaLine(
            "cu130",
            "",  # PyPI: torch 2.13.0's Linux wheel there is the CUDA 13.0 build
            "13.0",
            "NVIDIA driver R580 or newer (Turing to Blackwell: B200, RTX 50)",
        ),
        CudaLine(
            "cpu",
            "https://download.pytorch.org/whl/cpu",
            None,
            "no GPU (local test build only)",
            published=False,
        ),
    )
}
DEFAULT_LINE = "cu126"
LOCK_FILE = "image-constraints-{line}.txt"  # in the repository root, one per line
DEFAULT_MIN_CUDA = "12.6"  # LINES[DEFAULT_LINE].min_host_cuda, as a plain constant for defaults


def cuda_line(name: str) -> CudaLine:
    """The line called `name`; ValueError (with the choices) for anything else."""
    try:
        return LINES[name]
    except KeyError:
        raise ValueError(f"unknown CUDA line {name!r}; choose one of {', '.join(LINES)}") from None


def image_tag(line: str = DEFAULT_LINE, version: str = __version__) -> str:
    """The immutable tag of one release on one line, e.g. `0.1.0-cu126`."""
    return f"{version}-{cuda_line(line).name}"


def default_image(line: str = DEFAULT_LINE, version: str = __version__) -> str:
    """The image the launchers start by default: this heretic version, never `:latest`."""
    return f"{REPOSITORY}:{image_tag(line, version)}"


def line_of_image(image: str) -> CudaLine | None:
    """The CUDA line an image reference names by its tag suffix (`...:0.1.0-cu130`,
    `...:cu130`), or None for a tag that names none (a custom image)."""
    tag = image.rsplit("/", 1)[-1].partition("@")[0].partition(":")[2]
    for line in LINES.values():
        if tag == line.name or tag.endswith(f"-{line.name}"):
            return line
    return None


def min_host_cuda(image: str) -> str:
    """The host CUDA version to ask the providers for when starting `image`. An image whose
    tag names no line is taken to be built like the default line."""
    line = line_of_image(image) or LINES[DEFAULT_LINE]
    return line.min_host_cuda or DEFAULT_MIN_CUDA
