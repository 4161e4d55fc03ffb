"""Is this installation able to run? The image's build-time check (`heretic version --check`).

`heretic --version` imports nothing; this module imports what a run needs (torch, transformers,
accelerate, bitsandbytes, optuna, heretic's engine) and, inside the image (HERETIC_CUDA_LINE is
set by the Dockerfile), checks that torch is the build of that CUDA line. No GPU is needed:
`torch.version.cuda` is the toolkit torch was built with, known without a driver.
Guaranteed: never raises for a missing or broken package; it is reported as a problem.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from heretic import __version__, cuda_libraries
from heretic.image import cuda_line

# What `heretic run` imports; psycopg only where the image promises PostgreSQL storage.
REQUIRED = (
    "torch",
    "transformers",
    "accelerate",
    "bitsandbytes",
    "optuna",
    "huggingface_hub",
    "heretic.run.recipe",
)
IMAGE_EXTRA = ("psycopg",)
LINE_ENV = "HERETIC_CUDA_LINE"


@dataclass
class InstallReport:
    versions: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    cuda_line: str | None = None
    torch_cuda: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def _import(name: str, report: InstallReport) -> object | None:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # a broken wheel raises anything, not only ImportError
        report.problems.append(f"{name} does not import: {type(exc).__name__}: {exc}")
        return None
    report.versions[name] = str(
        getattr(module, "__version__", __version__ if name.startswith("heretic") else "?")
    )
    return module


def _check_line(line_name: str, report: InstallReport) -> None:
    """torch's own answer (`torch.version.cuda`, the toolkit it was built with) against the
    line. Not the local version label: PyPI's torch 2.13.0 is the CUDA 13.0 build without a
    `+cu130` label, and a label says nothing a mirror could not get wrong."""
    try:
        line = cuda_line(line_name)
    except ValueError as exc:
        report.problems.append(f"{LINE_ENV}: {exc}")
        return
    built = report.torch_cuda
    if line.min_host_cuda is None:
        if built is not None:
            report.problems.append(f"the {line.name} image has a CUDA {built} torch")
    elif built is None or built.split(".")[:2] != line.min_host_cuda.split("."):
        report.problems.append(
            f"torch was built for CUDA {built or 'none (a CPU build)'}, not "
            f"{line.min_host_cuda} as the {line.name} line needs"
        )
    else:
        cuda_libraries.check(line.min_host_cuda, report.versions, report.problems)


def check_install(environ: Mapping[str, str]) -> InstallReport:
    report = InstallReport(cuda_line=environ.get(LINE_ENV) or None)
    modules = {name: _import(name, report) for name in REQUIRED}
    if report.cuda_line:
        for name in IMAGE_EXTRA:
            _import(name, report)
    torch = modules["torch"]
    if torch is not None:
        report.torch_cuda = getattr(getattr(torch, "version", None), "cuda", None)
        if report.cuda_line:
            _check_line(report.cuda_line, report)
    return report


def render(report: InstallReport) -> str:
    lines = [f"heretic {__version__}"]
    if report.cuda_line:
        lines.append(f"image CUDA line: {report.cuda_line}")
    lines.append(f"torch CUDA build: {report.torch_cuda or 'none (CPU)'}")
    lines += [
        f"{name}: {version}"
        for name, version in report.versions.items()
        if not name.startswith("heretic")
    ]
    lines += [f"PROBLEM: {p}" for p in report.problems]
    return "\n".join(lines)
