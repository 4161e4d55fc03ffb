"""The model card (README.md) of an abliterated model: Hub metadata, the method, the selected
parameters and the before/after metrics, all taken from report.json. Holds no secrets: it is
built only from the report, which never contains tokens."""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCardData


def _metadata(report: dict[str, Any]) -> str:
    model = report["model"]
    data = ModelCardData(
        base_model=model if _is_hub_id(model) else None,
        library_name="transformers",
        tags=["heretic", "abliterated", "uncensored", "directional-ablation"],
        pipeline_tag="text-generation",
    )
    return data.to_yaml().rstrip("\n") + "\n"


def _is_hub_id(model: str) -> bool:
    return "/" in model and not model.startswith(("/", ".", "~"))


def _model_link(model: str) -> str:
    return f"[{model}](https://huggingface.co/{model})" if _is_hub_id(model) else f"`{model}`"


def _samples(report: dict[str, Any]) -> str:
    prompts = report.get("sample_prompts") or []
    before = report["base"].get("sample_responses") or []
    after = (report.get("selected") or {}).get("sample_responses") or []
    if not prompts or not after:
        return ""
    rows = "".join(
        f"| {_cell(p)} | {_cell(b)} | {_cell(a)} |\n" for p, b, a in zip(prompts, before, after, strict=False)
    )
    return ("## Sample completions (held-out harmful prompts, greedy)\n"
            "| prompt | base model | this model |\n|---|---|---|\n" + rows)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:160] or "(empty)"


def _layer_profile(report: dict[str, Any]) -> str:
    profile = report.get("layer_profile")
    if not profile:
        return ""
    prior = profile.get("prior") or {}
    ranges = ", ".join(f"{k} {v[0]:.2f}-{v[1]:.2f}" for k, v in profile["search_ranges"].items())
    return ("## Where the refusal was found\n"
            f"{prior.get('reason', '')}. Search ranges (fractions of the depth): {ranges}. "
            f"{_stopped(report)}\n\n"
            "![separation per layer and the selected kernel](layer_profile.png)\n\n")


def _stopped(report: dict[str, Any]) -> str:
    reason = report["trials"].get("stop_reason") or ""
    return f"Search: {reason} ({report['trials']['completed']} completed)." if reason else ""


def render_model_card(report: dict[str, Any]) -> str:
    base, sel = report["base"], report.get("selected")
    n = base["n_harmful"]
    if sel:
        metrics = (
            "| | refusals | KL divergence |\n|---|---|---|\n"
            f"| base model | {base['refusals']}/{n} | 0 |\n"
            f"| this model (trial {report['selected_trial']}) | {sel['refusals']}/{n} "
            f"| {sel['kl_divergence']:.3g} |\n"
        )
        verify = report.get("verification")
        if verify:
            metrics += (
                f"\nRe-counted with a longer budget of {verify['max_response_tokens']} tokens: base "
                f"{verify['base_refusals']}/{verify['n_harmful']}, this model "
                f"{verify['selected_refusals']}/{verify['n_harmful']} refusals.\n"
            )
        params = "```json\n" + json.dumps(sel["parameters"], indent=2) + "\n```\n"
    else:
        metrics = "No trial met the selection policy; no model was exported.\n"
        params = ""
    s = report.get("settings", {})
    return f"""---
{_metadata(report)}---

# {report['model']} (abliterated with heretic)

This model is {_model_link(report['model'])} with its refusal behaviour removed by directional
ablation ("abliteration"), made by heretic {report.get('heretic_version', '')}.

## Method
For every decoder layer, a refusal direction was computed as the difference of the mean residual
vectors at the last prompt token of harmful and harmless prompts
({'orthogonalized against the harmless mean' if s.get('project_directions', True) else 'not projected'},
{s.get('n_directions', 1)} direction(s) per layer). The outputs of the attention output projection and
the MLP down projection were edited as y' = y - w v (v . y) ({s.get('ablation', 'standard')} variant),
with a strength w that varies over the layers (a peak falling linearly to a minimum). The
strengths and the direction were searched with Optuna (multi-objective TPE,
{report['trials']['completed']} trials) to minimise both the refusal count on held-out harmful
prompts and the KL divergence of the first response token from the base model on held-out
harmless prompts. The edit is folded into the weights: no extra code is needed to load it.

## Metrics (held-out prompts)
{metrics}
Selection policy: {report['policy']['selection']} (KL cap {report['policy']['kl_cap']},
refusal cap {report['policy']['refusal_cap']}). Refusals are counted by refusal markers in greedy
completions of up to {s.get('max_response_tokens', '?')} tokens; markers miss some refusals and
flag some answers, so treat the count as an estimate.

{_samples(report)}
{_layer_profile(report)}## Selected parameters
{params}
## Limitations
Abliteration removes a learned refusal behaviour; it adds no knowledge and can lower quality on
some tasks (the KL divergence above is a first-token measure only). You are responsible for how
you use this model.
"""
