"""The preflight row for the refusal judge: what it costs in memory (a local judge model's
weights sit beside the run's model, during the search with judge_in_search, else from the
verification on) and whether both fit. That the judge answers is checked with one request
right after preflight (`heretic.judging.factory.probe_judge`, exit 17)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from heretic.config.settings import Settings
from heretic.errors import HereticError
from heretic.judging.factory import judge_kind, local_judge_model
from heretic.preflight.checks_model import _fit_for
from heretic.preflight.fit import gib
from heretic.preflight.inventory import GpuInfo, GpuInventory
from heretic.preflight.memory import MemoryEstimate, count_parameters, dtype_bytes
from heretic.preflight.report import Check, Status

NAME = "judge"


def judge_weight_bytes(model: str) -> int:
    """The judge's weights at its checkpoint's width (16 bit unless it says float32)."""
    from transformers import AutoConfig

    count = count_parameters(model)
    config = AutoConfig.from_pretrained(model)
    width = dtype_bytes(str(getattr(config, "dtype", None) or "bfloat16").replace("torch.", ""))
    return count.total * width


def check_judge(
    settings: Settings,
    mem: MemoryEstimate | None,
    gpus: Sequence[GpuInfo],
    inventory: GpuInventory,
) -> Check:
    kind = judge_kind(settings)
    if kind == "markers":
        return Check(NAME, Status.OK, "refusal markers (no model, no cost)", "-")
    model = local_judge_model(settings)
    if model is None:
        return Check(NAME, Status.OK, f"endpoint {settings.judge.partition(':')[2]}", "no memory")
    try:
        judge_bytes = judge_weight_bytes(model)
    except (HereticError, OSError, ValueError) as exc:
        detail = exc.paragraph() if isinstance(exc, HereticError) else str(exc)
        return Check(
            NAME, Status.FAIL, f"{kind} model {model}: no config", "its config.json", detail
        )
    when = "during the search" if settings.judge_in_search else "from the verification on"
    need = f"{gib(judge_bytes)} of judge weights beside the model {when}"
    if mem is None or settings.is_demo:
        return Check(NAME, Status.OK, f"{kind}:{model}", need)
    fit = _fit_for(replace(mem, weights_bytes=mem.weights_bytes + judge_bytes), gpus, inventory)
    if fit.fits:
        return Check(NAME, Status.OK, f"{kind}:{model}, {fit.describe()}", need)
    return Check(
        NAME,
        Status.FAIL,
        f"{gib(fit.usable_bytes)} usable {fit.where}",
        need,
        "use a smaller judge model, an endpoint judge (--judge endpoint:URL), or a bigger GPU",
    )
