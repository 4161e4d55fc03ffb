"""Checks about the model and its fit: parameter count, profile, memory, device map, batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from heretic.config.profiles import load_profile
from heretic.config.settings import Settings
from heretic.errors import HereticError
from heretic.jsontypes import JsonDict
from heretic.preflight.fit import Fit, fit_ram, fit_single, fit_split, gib
from heretic.preflight.inventory import GpuInfo, GpuInventory
from heretic.preflight.memory import MemoryEstimate, ParamCount, count_parameters
from heretic.preflight.profiles_auto import ProfileChoice, choose_profile
from heretic.preflight.report import Check, Status


@lru_cache(maxsize=16)
def cached_count(model: str, revision: str | None, trust_remote_code: bool) -> ParamCount:
    """count_parameters, once per process (resolve_settings and run_preflight both need it)."""
    return count_parameters(model, revision, trust_remote_code)


def check_model(settings: Settings) -> tuple[Check, ParamCount | None]:
    if settings.is_demo:
        return Check("model", Status.OK, "built-in demo model (a few MB)", "a config"), None
    try:
        count = cached_count(settings.model or "", settings.revision, settings.trust_remote_code)
    except HereticError as exc:
        return Check(
            "model",
            Status.FAIL,
            f"no usable config for {settings.model}",
            "a readable config.json",
            exc.paragraph(),
        ), None
    measured = (
        f"{count.total / 1e9:.2f}B parameters ({count.model_type}, {count.num_layers} layers, "
        f"hidden {count.hidden_size}, vocab {count.vocab_size})"
    )
    if count.moe_layers:
        measured += (
            f"; mixture of experts: {count.active / 1e9:.2f}B active per token "
            f"({count.experts_per_token} of {count.num_experts} experts in "
            f"{count.moe_layers} layers)"
        )
    problem = _edit_problem(settings, count)
    if problem:
        return Check(
            "model", Status.FAIL, measured, "an architecture heretic can edit", problem
        ), count
    return Check("model", Status.OK, measured, "a readable config.json"), count


def _edit_problem(settings: Settings, count: ParamCount) -> str:
    """Why the requested edit cannot run on this architecture ('' when it can)."""
    for component in settings.components:
        if component in count.unsupported:
            return count.unsupported[component]
    if settings.ablation == "norm-preserving" and "mlp" in settings.components and count.moe_layers:
        return (
            f"--ablation norm-preserving cannot be applied exactly to the {count.moe_layers} "
            "mixture-of-experts layers (it rescales each expert's rows by its own factor). "
            "Use --ablation standard (exact on MoE models), or --set components=attention."
        )
    return ""


def check_profile(
    settings: Settings,
    count: ParamCount | None,
    inventory: GpuInventory,
    environ: Mapping[str, str],
) -> tuple[Check, ProfileChoice | None]:
    name = settings.profile
    if name is None:
        return Check("profile", Status.OK, "none (defaults and your settings)", "-"), None
    if name != "auto":
        try:
            profile = load_profile(name)
        except HereticError as exc:
            return Check(
                "profile", Status.FAIL, f"'{name}'", "a known profile", exc.paragraph()
            ), None
        return (
            Check("profile", Status.OK, f"{name}: {profile.description}", "-"),
            ProfileChoice(name, "chosen by name"),
        )
    if count is None and not settings.is_demo:
        return Check(
            "profile",
            Status.FAIL,
            "auto: no estimate",
            "a model estimate",
            "fix the model check first",
        ), None
    choice = choose_profile(count, inventory, settings.is_demo, environ=environ)
    if choice.fail_message:
        return Check(
            "profile", Status.FAIL, "auto: nothing fits", "a profile that fits", choice.fail_message
        ), choice
    return Check(
        "profile", Status.OK, f"auto -> {choice.name}", "a profile that fits", choice.reason
    ), choice


def _fit_for(mem: MemoryEstimate, gpus: Sequence[GpuInfo], inventory: GpuInventory) -> Fit:
    if not gpus:
        return fit_ram(mem, inventory)
    if len(gpus) == 1:
        return fit_single(mem, gpus[0])
    return fit_split(mem, gpus)


def check_memory(
    settings: Settings,
    count: ParamCount | None,
    mem: MemoryEstimate | None,
    gpus: Sequence[GpuInfo],
    inventory: GpuInventory,
) -> Check:
    name = "GPU memory" if gpus else "RAM (model)"
    if settings.is_demo:
        return Check(name, Status.OK, "demo model: a few MB", "-")
    if count is None or mem is None:
        return Check(name, Status.FAIL, "unknown", "a model estimate", "fix the model check first")
    fit = _fit_for(mem, gpus, inventory)
    need = (
        f"{fit.describe()} (weights {gib(mem.weights_bytes)} {_weights_label(settings)}, "
        f"batch {mem.batch} x {mem.tokens} tokens: KV {gib(mem.kv_cache_bytes)}, "
        f"activations {gib(mem.activation_bytes)}, logits {gib(mem.logits_bytes)}, "
        f"KL reference {gib(mem.kl_reference_bytes)})"
    )
    if fit.fits:
        return Check(name, Status.OK, f"{gib(fit.usable_bytes)} usable {fit.where}", need)
    fix = (
        "use --profile auto, quantize (--profile gpu-4bit), split over GPUs (--profile "
        "multi-gpu), lower max_batch_size, or use a bigger GPU"
        if gpus
        else "run it on a GPU machine (--profile auto names the GPU set it needs) "
        "or pick a smaller model"
    )
    return Check(name, Status.FAIL, f"{gib(fit.usable_bytes)} usable {fit.where}", need, fix)


def _weights_label(settings: Settings) -> str:
    if settings.quantization != "none":
        return settings.quantization
    return "float32" if settings.dtype == "float32" else "bf16"


def check_device_map(settings: Settings, gpus: Sequence[GpuInfo]) -> Check:
    dm = settings.device_map
    if dm.strip().lower() == "auto" and len(gpus) > 1:
        return Check(
            "device map",
            Status.WARN,
            f"auto over {len(gpus)} GPUs",
            "balanced on several GPUs",
            "auto filled GPU 0 first and ran out of memory in the field notes; use "
            "device_map balanced (--profile multi-gpu) or cuda:0 for a model that fits one GPU",
        )
    where = f" over {len(gpus)} GPU(s)" if gpus else " (CPU)"
    return Check("device map", Status.OK, dm + where, "-")


def check_batch(settings: Settings) -> Check:
    if settings.batch_size == 1:
        return Check(
            "batch size",
            Status.WARN,
            "1",
            ">= 4 or 0 (automatic)",
            "batch 1 made the residual pass 4x slower than batch 4 in the field notes",
        )
    size = "0 (automatic)" if settings.batch_size == 0 else str(settings.batch_size)
    return Check("batch size", Status.OK, f"{size}, max {settings.max_batch_size}", "-")


def estimate_dict(count: ParamCount | None, mem: MemoryEstimate | None) -> JsonDict | None:
    if count is None:
        return None
    return {"parameters": count.to_dict(), "memory": mem.to_dict() if mem else None}
