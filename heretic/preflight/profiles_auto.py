"""`--profile auto`: pick the hardware profile that fits the model on this machine.

Order (first match wins):
1. no --model (the built-in demo) -> cpu-demo, on any machine;
2. no GPU -> cpu when the model fits RAM, else FAIL;
3. the model fits one GPU in 16 bit -> the smallest of gpu-24gb / gpu-48gb / gpu-80gb whose
   memory class holds the estimate (and a GPU here does too);
4. it fits one GPU in 4 bit -> gpu-4bit;
5. it fits split over all visible GPUs -> multi-gpu (device_map balanced);
6. FAIL, naming the memory needed and the smallest common GPU set that would fit.
Each profile is costed with its own batch sizes (see `heretic.preflight.fit` for the rules).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from heretic.config.profiles import load_profile
from heretic.config.settings import Settings
from heretic.jsontypes import JsonDict
from heretic.preflight.fit import (
    COMMON_GPUS,
    best_single,
    fit_ram,
    fit_single,
    fit_split,
    gib,
    smallest_gpu_set,
    usable_gpu_bytes,
)
from heretic.preflight.inventory import GpuInfo, GpuInventory, visible_gpus
from heretic.preflight.memory import MemoryEstimate, ParamCount, estimate_for_settings

DEMO, CPU, FOUR_BIT, SPLIT = "cpu-demo", "cpu", "gpu-4bit", "multi-gpu"
# single-GPU profiles, smallest first, with the card class each is meant for (None: any larger)
SINGLE_GPU = (("gpu-24gb", COMMON_GPUS[0]), ("gpu-48gb", COMMON_GPUS[1]), ("gpu-80gb", None))


@dataclass(frozen=True)
class ProfileChoice:
    name: str | None  # None when nothing fits
    reason: str
    fail_message: str | None = None

    def to_dict(self) -> JsonDict:
        return asdict(self)


def profile_memory(count: ParamCount, name: str, directory: Path | None = None) -> MemoryEstimate:
    """The estimate for `count` under profile `name`'s settings (on top of the defaults)."""
    settings = Settings.model_validate(load_profile(name, directory).settings)
    return estimate_for_settings(count, settings)


def _size(count: ParamCount) -> str:
    return f"{count.total / 1e9:.2f}B-parameter {count.model_type or 'model'}"


def _machine(gpus: list[GpuInfo]) -> str:
    names: dict[str, int] = {}
    for g in gpus:
        label = f"{g.name} ({gib(g.total_bytes)})"
        names[label] = names.get(label, 0) + 1
    return ", ".join(f"{n}x {label}" for label, n in names.items())


def _suggestion(count: ParamCount, directory: Path | None) -> str:
    m16 = profile_memory(count, "gpu-80gb", directory)
    m4 = profile_memory(count, FOUR_BIT, directory)
    split = profile_memory(count, SPLIT, directory)
    parts = []
    set16 = smallest_gpu_set(m16, split)
    set4 = smallest_gpu_set(m4, m4, single_only=True)
    if set16:
        parts.append(f"in 16 bit {set16}")
    if set4:
        parts.append(f"in 4 bit {set4} (--profile {FOUR_BIT})")
    if not parts:
        return "No common GPU set up to 8 cards holds it."
    return "Smallest common GPU set that would fit: " + "; ".join(parts) + "."


def _cpu_choice(
    count: ParamCount, inventory: GpuInventory, directory: Path | None
) -> ProfileChoice:
    fit = fit_ram(profile_memory(count, CPU, directory), inventory)
    why = f"no GPU found ({inventory.nvml_error or 'NVML lists none'})"
    if fit.fits:
        return ProfileChoice(
            CPU,
            f"{why}; the {_size(count)} fits in RAM in bf16 ({fit.describe()}); expect "
            "minutes per trial or more: a GPU is much faster.",
        )
    return ProfileChoice(
        None,
        why,
        f"The {_size(count)} cannot run on this machine: {why}, and on the CPU it "
        f"{fit.describe()}. Run it on a GPU machine. {_suggestion(count, directory)}",
    )


def _single_gpu_choice(
    count: ParamCount, gpus: list[GpuInfo], directory: Path | None
) -> ProfileChoice | None:
    for name, card in SINGLE_GPU:
        mem = profile_memory(count, name, directory)
        if card is not None and not fit_single(mem, card.as_gpu()).fits:
            continue  # this memory class is too small for the model
        fit = best_single(mem, gpus)
        if fit is not None and fit.fits:
            idle = f"; the other {len(gpus) - 1} GPU(s) stay idle" if len(gpus) > 1 else ""
            return ProfileChoice(
                name, f"the {_size(count)} fits one GPU in bf16: {fit.describe()}{idle}."
            )
    return None


def choose_profile(
    estimate: ParamCount | None,
    inventory: GpuInventory,
    model_is_demo: bool,
    *,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> ProfileChoice:
    """The profile `--profile auto` resolves to, with the reason (or why nothing fits)."""
    if model_is_demo:
        return ProfileChoice(DEMO, "no --model: the built-in demo model (a few MB) runs on CPU.")
    if estimate is None:
        return ProfileChoice(None, "", "No parameter count for the model, so no profile fits.")
    gpus = visible_gpus(inventory, environ)
    if not gpus:
        return _cpu_choice(estimate, inventory, directory)
    single = _single_gpu_choice(estimate, gpus, directory)
    if single is not None:
        return single
    bf16 = fit_single(profile_memory(estimate, "gpu-80gb", directory), _roomiest(gpus))
    m4 = profile_memory(estimate, FOUR_BIT, directory)
    four = fit_single(m4, _roomiest(gpus))
    if four.fits:
        return ProfileChoice(
            FOUR_BIT,
            f"the {_size(estimate)} does not fit one GPU in bf16 ({bf16.describe()}) "
            f"but does in 4 bit: {four.describe()}.",
        )
    split = fit_split(profile_memory(estimate, SPLIT, directory), gpus)
    if len(gpus) > 1 and split.fits:
        return ProfileChoice(
            SPLIT,
            f"the {_size(estimate)} fits neither one GPU in bf16 ({bf16.describe()}) nor "
            f"in 4 bit ({four.describe()}), but split over {len(gpus)} GPUs: {split.describe()}.",
        )
    return ProfileChoice(
        None,
        "nothing fits",
        f"The {_size(estimate)} does not fit this machine ({_machine(gpus)}): in bf16 it "
        f"{bf16.describe()}; in 4 bit it {four.describe()}"
        + (f"; split over all GPUs it {split.describe()}" if len(gpus) > 1 else "")
        + f". {_four_bit_split_hint(m4, gpus)}{_suggestion(estimate, directory)}"
        + _experts_note(estimate),
    )


def _experts_note(count: ParamCount) -> str:
    """Why 4 bit barely helps a mixture-of-experts model (its experts are not nn.Linear)."""
    if not count.expert:
        return ""
    return (
        f" bitsandbytes quantizes linear layers only: the fused experts "
        f"({count.expert / 1e9:.1f}B of the {count.total / 1e9:.1f}B parameters) stay 16-bit, "
        "so 4 bit hardly shrinks this model."
    )


def _roomiest(gpus: list[GpuInfo]) -> GpuInfo:
    return max(gpus, key=usable_gpu_bytes)


def _four_bit_split_hint(m4: MemoryEstimate, gpus: list[GpuInfo]) -> str:
    """4 bit split over several GPUs is no profile of its own, but say so when it would fit."""
    if len(gpus) < 2 or not fit_split(m4, gpus).fits:
        return ""
    return (
        f"In 4 bit split over these {len(gpus)} GPUs it would fit: --profile {SPLIT} "
        "--set quantization=bnb-4bit. "
    )
