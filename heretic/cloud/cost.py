"""A rough estimate of a run's hours and cost on a rented GPU, and of the disk it needs.

The model: a search trial is dominated by greedy decoding of the harmful evaluation prompts,
and each decode step of a batch reads every weight once, so a step costs about
weight bytes / memory bandwidth. Per trial: ceil(harmful/batch) x response tokens decode steps,
plus one forward per harmless batch for the KL divergence, plus applying and restoring the
ablation (about two passes over the weights). Once per run: the residual pass over the
direction prompts, the download, the export and upload, and the container start. GPU time is
divided by an efficiency factor of 0.25 (kernels reach a fraction of peak bandwidth, and
Python, tokenisation and sampling cost time too), so the figure errs long.
Mixture-of-experts models (given the preflight count): a decode step reads only the experts
its batch routes to (the active parameters at one token, nearly all of them at batch 64), and
bitsandbytes leaves fused experts in 16 bit. It is an estimate
for choosing a budget, not a promise: real runs vary with the prompts and the model's family.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from heretic.cloud.gpu_kinds import GpuKind
from heretic.errors import CloudError, HereticError

if TYPE_CHECKING:  # the counter itself is imported where used (it may be missing)
    from heretic.preflight.memory import ParamCount

EFFICIENCY = 0.25
DOWNLOAD_BYTES_S = 150e6  # Hub download, bytes/s
UPLOAD_BYTES_S = 100e6  # export to disk plus upload to the Hub, bytes/s
STARTUP_S = 600.0  # image pull and container start
BYTES_PER_PARAM = {"none": 2.0, "bnb-8bit": 1.05, "bnb-4bit": 0.55}
DEFAULT_DISK_GB = 150


@dataclass(frozen=True)
class RunShape:
    """The run's size: what the estimate depends on besides the parameter count and GPU."""

    trials: int = 200
    batch_size: int = 64
    harmful_eval: int = 100
    harmless_eval: int = 100
    direction_prompts: int = 800
    max_response_tokens: int = 48
    quantization: str = "none"


@dataclass(frozen=True)
class RunEstimate:
    hours: float
    weights_gb: float  # as loaded for the search
    fits: bool  # whether the weights (plus working memory) fit the GPU
    disk_gb: int

    def cost(self, price_per_hour: float | None) -> float | None:
        return None if price_per_hour is None else round(self.hours * price_per_hour, 2)


def disk_for_params(n_params: int) -> int:
    """Disk for the Hub cache plus the exported full-precision copy plus the image, in GB,
    rounded up to 10."""
    full_gb = n_params * 2.0 / 1e9
    return int(math.ceil((full_gb * 2 + 30) / 10) * 10)


def estimate_run(
    n_params: int, shape: RunShape, gpu: GpuKind, *, count: ParamCount | None = None
) -> RunEstimate:
    """Hours for one run of `shape` on one `gpu` (a pure function; see the module text).
    `count`: the preflight ParamCount, for mixture-of-experts models (expert parameters)."""
    if n_params <= 0:
        raise ValueError("n_params must be positive")
    bytes_per_param = BYTES_PER_PARAM.get(shape.quantization, 2.0)
    expert = count.expert if count is not None else 0  # fused experts: never quantized
    weight_bytes = (n_params - expert) * bytes_per_param + expert * 2.0
    step_s = weight_bytes / (gpu.bandwidth_gb_s * 1e9)
    batch = max(1, shape.batch_size)
    decode_s = step_s
    if count is not None and expert:  # a decode step of `batch` tokens reads only its experts
        unread = n_params - count.read_per_step(min(batch, shape.harmful_eval))
        decode_s = (weight_bytes - unread * 2.0) / (gpu.bandwidth_gb_s * 1e9)
    decode_steps = math.ceil(shape.harmful_eval / batch) * shape.max_response_tokens
    full_steps = (math.ceil(shape.harmless_eval / batch) + 2) * shape.trials
    residual_steps = math.ceil(shape.direction_prompts / batch)
    gpu_s = (
        (shape.trials * decode_steps) * decode_s + (full_steps + residual_steps) * step_s
    ) / EFFICIENCY
    full_bytes = n_params * 2.0  # downloaded and exported at full precision
    io_s = full_bytes / DOWNLOAD_BYTES_S + 2 * full_bytes / UPLOAD_BYTES_S
    hours = (gpu_s + io_s + STARTUP_S) / 3600
    weights_gb = weight_bytes / 1e9
    # Working memory: activations, KV cache and logits; 20% plus 2 GB is a rough allowance.
    fits = weights_gb * 1.2 + 2 <= gpu.memory_gb
    return RunEstimate(round(hours, 2), round(weights_gb, 1), fits, disk_for_params(n_params))


def shape_from_settings(values: dict[str, Any], trials: int | None = None) -> RunShape:
    """A RunShape from settings values (defaults, then a profile's [settings] table)."""
    from heretic.config.settings import Settings

    merged = {k: v for k, v in values.items() if k in Settings.model_fields}
    settings = Settings.model_validate(merged)
    batch = settings.batch_size or settings.max_batch_size
    return RunShape(
        trials=trials or settings.trials,
        batch_size=batch,
        max_response_tokens=settings.max_response_tokens,
        quantization=settings.quantization,
    )


def shape_for_profile(profile: str | None, trials: int | None = None) -> RunShape:
    """The run shape a profile implies; `auto` or none means the defaults (auto picks its
    profile on the machine itself, which we cannot see from here)."""
    values: dict[str, Any] = {}
    if profile and profile != "auto":
        from heretic.config.profiles import load_profile_file, profiles_dir

        path = profiles_dir() / f"{profile}.toml"
        if not path.is_file():
            raise CloudError(
                f"Profile '{profile}' does not exist ({path}).",
                "Run `heretic profiles` to list them, or use --profile auto.",
            )
        values = dict(load_profile_file(path).settings)
    return shape_from_settings(values, trials)


def _total_from(result: object) -> int:
    for name in ("total", "total_parameters", "total_params", "n_parameters", "parameters"):
        value = getattr(result, name, None)
        if isinstance(value, int | float) and value > 0:
            return int(value)
    if isinstance(result, int | float) and result > 0:
        return int(result)
    raise CloudError(
        "The parameter counter answered without a total count.",
        "This is a bug in heretic; report it with the model id.",
    )


def count_model_parameters(
    model: str, revision: str | None = None, trust_remote_code: bool = False
) -> int:
    """The model's parameter count, from preflight's counter (reads the config, not weights)."""
    return _total_from(count_model(model, revision, trust_remote_code))


def count_model(
    model: str, revision: str | None = None, trust_remote_code: bool = False
) -> ParamCount:
    """Preflight's ParamCount of the model (total, active and expert parameters)."""
    try:
        # A slimmed installation may lack preflight's counter: prices still work without it.
        from heretic.preflight.memory import count_parameters
    except ImportError:
        raise CloudError(
            "The parameter counter (heretic.preflight.memory) is not available in this "
            "installation, so no hours or cost can be estimated.",
            "Run without --model for prices only, or update heretic.",
        ) from None
    try:
        result = count_parameters(model, revision=revision, trust_remote_code=trust_remote_code)
    except HereticError:
        raise
    except Exception as exc:  # the counter's own failure, reported with the model named
        raise CloudError(
            f"Could not count the parameters of '{model}': {type(exc).__name__}: {exc}.",
            "Check the model id (and HF_TOKEN for gated models).",
        ) from None
    return result


def estimate_for_model(
    model: str, revision: str | None, profile: str, trials: int | None, gpu: GpuKind
) -> tuple[RunEstimate, list[str]]:
    """The run's estimate on one `gpu`, and the lines that tell the user what it rests on."""
    count = count_model(model, revision)
    n_params = int(count.total)
    est = estimate_run(n_params, shape_for_profile(profile, trials), gpu, count=count)
    active = getattr(count, "active", n_params)
    moe = f" ({active / 1e9:.2f}B active per token)" if active < n_params else ""
    lines = [
        f"{model}: {n_params / 1e9:.2f}B parameters{moe}, {est.weights_gb} GB of weights. "
        f"Rough estimate on one {gpu.name}: {est.hours} h (see docs/cloud.md for how it "
        "is made)."
    ]
    if not est.fits:
        lines.append(
            f"WARNING: the weights do not fit one {gpu.name}; use --set "
            "quantization=bnb-4bit or a larger GPU."
        )
    return est, lines


def count_for_disk(model: str, warn: Callable[[str], None]) -> int | None:
    """The parameter count the launcher sizes the disk from, or None (with a warning) when the
    model cannot be counted: the launch then takes the default disk."""
    try:
        return count_model_parameters(model)
    except HereticError as exc:
        warn(f"WARNING: could not size the disk from the model: {exc.message}")
        return None
