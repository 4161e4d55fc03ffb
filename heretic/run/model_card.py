"""The model card (README.md) of an abliterated model: Hub metadata, the method, the selected
parameters and the before/after metrics, all taken from report.json. Holds no secrets: it is
built only from the report, which never contains tokens."""

from __future__ import annotations

import json

from huggingface_hub import ModelCardData

from heretic.run.judge_card import judge_sections
from heretic.run.report_types import ExampleSets, MeasuredRecord, RunReport


def _metadata(report: RunReport) -> str:
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


def _samples(report: RunReport) -> str:
    prompts = report.get("sample_prompts") or []
    before = report["base"].get("sample_responses") or []
    selected = report.get("selected")
    after = (selected["sample_responses"] if selected else None) or []
    if not prompts or not after:
        return ""
    rows = "".join(
        f"| {_cell(p)} | {_cell(b)} | {_cell(a)} |\n"
        for p, b, a in zip(prompts, before, after, strict=False)
    )
    return (
        "## Sample completions (search's harmful prompts, greedy)\n"
        "| prompt | base model | this model |\n|---|---|---|\n" + rows
    )


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")[:160] or "(empty)"


def _pct(value: float) -> str:
    return f"{value:.0%}"


def _dmg(row: MeasuredRecord) -> float:
    """The verified damage: the answer KL, or the first-token KL where that was the measure."""
    answer = row.get("answer_kl")
    return answer if answer is not None else row["kl_divergence"]


def _verification(report: RunReport) -> str:
    v = report.get("verification")
    if not v:
        return ""
    sel, base, alts = v["selected"], v["base"], v.get("alternatives") or []
    nh, nl = v["prompts"]["harmful"], v["prompts"]["harmless"]
    where = (
        f"{nh} harmful and {nl} harmless prompts that the search never scored ({v['source']})"
        if v["held_out"]
        else f"the search's own {nh} harmful and {nl} harmless prompts (no held-out split was "
        "kept, so these figures are flattered by the selection)"
    )
    rows = (
        f"| base model | {base['refusals']}/{nh} | 0 | 100% | 0% |\n"
        f"| this model (trial {sel['trial']}) | {sel['refusals']}/{nh} "
        f"| {_dmg(sel):.3g} | {_pct(sel['harmless_unchanged'])} "
        f"| {_pct(sel['first_sentence_changed'])} |\n"
    )
    for alt in alts:
        a = alt["verification"]
        rows += (
            f"| alternative: trial {a['trial']} | {a['refusals']}/{nh} | "
            f"{_dmg(a):.3g} | {_pct(a['harmless_unchanged'])} "
            f"| {_pct(a['first_sentence_changed'])} |\n"
        )
    text = (
        f"## Verification (prompts the search never saw)\n"
        f"Measured on {where}, with greedy answers of up to {v['max_response_tokens']} tokens "
        f"for the refusal count. *Harmless answers unchanged*: the share of answers to the "
        f"harmless prompts whose first {v['compare_tokens']} tokens are identical to the base "
        f"model's; *first sentence changed*: the share whose first sentence differs.\n\n"
        "| | refusals | damage (KL) | harmless answers unchanged | first sentence changed |\n"
        "|---|---|---|---|---|\n" + rows
    )
    text += (
        "\nThe alternatives are the policy's next candidates and the selected trial's "
        "neighbours on the Pareto front; `heretic export --trial N` writes any trial "
        "of the study, with its own report, without running the search again.\n"
    )
    return text + _pairs(v["examples"])


def _pairs(examples: ExampleSets) -> str:
    out = ""
    for kind, pairs in (("harmful", examples["harmful"]), ("harmless", examples["harmless"])):
        if pairs:
            out += (
                f"\n### Before and after: {kind} prompts (verification split, greedy)\n"
                "| prompt | base model | this model |\n|---|---|---|\n"
            )
            out += "".join(
                f"| {_cell(e['prompt'])} | {_cell(e['base'])} | {_cell(e['edited'])} |\n"
                for e in pairs
            )
    return out


def _limits(report: RunReport) -> str:
    markers = (
        report.get("refusal_markers") or report.get("settings", {}).get("refusal_markers") or []
    )
    shown = ", ".join(f"`{m}`" for m in markers)
    return (
        "## What these numbers cannot tell\n"
        "A completion counts as a refusal when it is empty or contains one of these markers "
        f"(case-insensitive): {shown}. Marker counting misses refusals that use none of them "
        "(a changed subject, a lecture, a deliberately useless answer) and counts an answer that "
        "opens with a disclaimer and then complies as a refusal. Only the first tokens of each "
        "answer are read. The damage is a KL divergence from the base model on harmless "
        "prompts and the share of unchanged harmless answers a stricter, longer look; neither "
        "measures correctness or quality on real tasks.\n"
    )


def _layer_profile(report: RunReport) -> str:
    profile = report.get("layer_profile")
    if not profile:
        return ""
    prior = profile.get("prior") or {}
    ranges = ", ".join(f"{k} {v[0]:.2f}-{v[1]:.2f}" for k, v in profile["search_ranges"].items())
    return (
        "## Where the refusal was found\n"
        f"{prior.get('reason', '')}. Search ranges (fractions of the depth): {ranges}. "
        f"{_stopped(report)}\n\n"
        "![separation per layer and the selected kernel](layer_profile.png)\n\n"
    )


def _why(report: RunReport) -> str:
    why = report["policy"].get("why")
    return f": {why}" if why else ""


def _stopped(report: RunReport) -> str:
    reason = report["trials"].get("stop_reason") or ""
    return f"Search: {reason} ({report['trials']['completed']} completed)." if reason else ""


def _headline(report: RunReport) -> str:
    """The first lines after the title: how many everyday answers the edit changed (what users
    of an abliterated model judge it by), and the gate's verdict when it held the edit back."""
    v = report.get("verification")
    if not v:
        return (
            "**Everyday answers: not verified** (verification was switched off), so how many "
            "harmless answers this edit changes is unknown.\n\n"
        )
    sel = v["selected"]
    where = "held-back" if v["held_out"] else "search"
    line = (
        f"**Everyday answers: {_pct(sel['harmless_unchanged'])} of {sel['n_harmless']} "
        f"{where} harmless answers are unchanged** (identical to the base model's for "
        f"{v['compare_tokens']} tokens; {_pct(1 - sel['harmless_unchanged'])} changed). "
        f"Refusals: {sel['refusals']}/{sel['n_harmful']} {where} harmful prompts (base model "
        f"{v['base']['refusals']}/{v['base']['n_harmful']}).\n\n"
    )
    gate = report.get("gate")
    if gate and not gate["passed"]:
        line += f"**Held back by the damage gate:** {gate['message']}\n\n"
    return line


def _damage_words(report: RunReport) -> str:
    s = report.get("settings", {})
    if s.get("damage_metric", "first_token") == "answer":
        return (
            "the KL divergence from the base model along its own greedy answers to held-out "
            f"harmless prompts ({s.get('damage_tokens', 32)} tokens, teacher-forced)"
        )
    return "the KL divergence of the first response token from the base model on held-out harmless prompts"


def render_model_card(report: RunReport) -> str:
    base, sel = report["base"], report.get("selected")
    n = base["n_harmful"]
    chosen = report["policy"].get("chosen_by")
    if sel:
        metrics = (
            "| | refusals | damage (KL) |\n|---|---|---|\n"
            f"| base model | {base['refusals']}/{n} | 0 |\n"
            f"| this model (trial {report['selected_trial']}) | {sel['refusals']}/{n} "
            f"| {sel['kl_divergence']:.3g} |\n"
        )
        params = "```json\n" + json.dumps(sel["parameters"], indent=2) + "\n```\n"
    else:
        metrics = "No trial met the selection policy; no model was exported.\n"
        params = ""
    how = (
        "chosen by hand (`heretic export --trial`)"
        if chosen == "manual"
        else f"chosen by the selection policy {report['policy']['selection']}"
    )
    s = report.get("settings", {})
    return f"""---
{_metadata(report)}---

# {report["model"]} (abliterated with heretic)

{_headline(report)}This model is {_model_link(report["model"])} with its refusal behaviour removed by directional
ablation ("abliteration"), made by heretic {report.get("heretic_version", "")}.

## Method
For every decoder layer, a refusal direction was computed as the difference of the mean residual
vectors at the last prompt token of harmful and harmless prompts
({"orthogonalized against the harmless mean" if s.get("project_directions", True) else "not projected"},
{s.get("n_directions", 1)} direction(s) per layer). The outputs of the attention output projection and
the MLP down projection were edited as y' = y - w v (v . y) ({s.get("ablation", "standard")} variant),
with a strength w that varies over the layers (a peak falling linearly to a minimum). The
strengths and the direction were searched with Optuna (multi-objective TPE,
{report["trials"]["completed"]} trials) to minimise both the refusal count on held-out harmful
prompts and the damage: {_damage_words(report)}. The edit is folded into the weights: no extra code is needed to load it.

## Search scores (the prompts the trials were scored and selected on)
{metrics}
The trial was {how} (damage cap {report["policy"]["kl_cap"]}, refusal cap
{report["policy"]["refusal_cap"]}){_why(report)}. Because it was chosen on these prompts, these figures are
optimistic; the verification below is not. Refusals here are counted in greedy completions of
up to {s.get("max_response_tokens", "?")} tokens.

{_verification(report)}
{judge_sections(report)}
{_samples(report)}
{_limits(report)}
{_layer_profile(report)}## Selected parameters
{params}
## Limitations
Abliteration removes a learned refusal behaviour; it adds no knowledge and can lower quality on
some tasks. You are responsible for how you use this model.
"""
