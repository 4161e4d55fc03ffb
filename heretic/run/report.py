"""The run's record in the output folder: report.json, trials.jsonl, pareto.png and the model card
README.md. Every file is written to a temporary name and renamed, so readers never see half a file.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import FrozenTrial

from heretic import __version__
from heretic.atomic import write_atomic, write_with
from heretic.engine.selection import TrialScore, pareto_front, score
from heretic.engine.trial_record import TrialRecord
from heretic.engine.verification import Example, Verified
from heretic.jsontypes import JsonDict
from heretic.run.report_types import (
    ExampleRecord,
    GateRecord,
    MeasuredRecord,
    RunReport,
    TrialRow,
    VerificationRecord,
)


def _measured(v: Verified) -> MeasuredRecord:
    return {
        "trial": v.trial,
        "refusals": v.refusals,
        "n_harmful": v.n_harmful,
        "kl_divergence": v.kl_divergence,
        "answer_kl": v.answer_kl,
        "harmless_unchanged": round(v.harmless_unchanged, 4),
        "first_sentence_changed": round(v.first_sentence_changed, 4),
        "n_harmless": v.n_harmless,
    }


def _example(e: Example) -> ExampleRecord:
    return {"prompt": e.prompt, "base": e.base, "edited": e.edited}


@dataclass
class Verification:
    """The chosen edit, and its Pareto-front neighbours, measured on the verification split."""

    held_out: bool  # False: measured on the search's own prompts (verify_split=0)
    source: str
    search_harmful: int
    search_harmless: int
    max_response_tokens: int
    compare_tokens: int
    base: Verified
    selected: Verified
    alternatives: list[tuple[Verified, TrialScore]] = field(default_factory=list)

    def summary(self) -> str:
        s, where = (
            self.selected,
            (
                "prompts the search never scored"
                if self.held_out
                else "the search's own prompts (no held-out split)"
            ),
        )
        return (
            f"Verification on {s.n_harmful} harmful + {s.n_harmless} harmless {where}, "
            f"{self.max_response_tokens} tokens: base {self.base.refusals}/{s.n_harmful} "
            f"refusals; trial {s.trial} {s.refusals}/{s.n_harmful} refusals, "
            + (
                f"damage {s.answer_kl:.3g} (first-token KL {s.kl_divergence:.3g})"
                if s.answer_kl is not None
                else f"KL {s.kl_divergence:.3g}"
            )
            + f", {s.harmless_unchanged:.0%} of harmless answers "
            f"unchanged for {self.compare_tokens} tokens."
        )

    def to_dict(self) -> VerificationRecord:
        s = self.selected
        return {
            "held_out": self.held_out,
            "source": self.source,
            "prompts": {"harmful": s.n_harmful, "harmless": s.n_harmless},
            "search_prompts": {"harmful": self.search_harmful, "harmless": self.search_harmless},
            "max_response_tokens": self.max_response_tokens,
            "compare_tokens": self.compare_tokens,
            "base": {"refusals": self.base.refusals, "n_harmful": self.base.n_harmful},
            "selected": _measured(s),
            "examples": {
                "harmful": [_example(e) for e in s.harmful_examples],
                "harmless": [_example(e) for e in s.harmless_examples],
            },
            "alternatives": [
                {
                    "trial": v.trial,
                    "search": {"refusals": t.refusals, "kl_divergence": t.kl},
                    "verification": _measured(v),
                }
                for v, t in self.alternatives
            ],
        }


@dataclass
class RunRecord:
    model: str
    settings: JsonDict
    base_refusals: int
    n_harmful: int
    n_harmless: int
    trials: list[FrozenTrial]
    requested: int
    selected: FrozenTrial | None
    timings: dict[str, float] = field(default_factory=dict)
    base_samples: list[str] = field(default_factory=list)
    sample_prompts: list[str] = field(default_factory=list)
    verification: Verification | None = None
    architecture: str = ""
    num_layers: int = 0
    chosen_by: str = ""  # the selection policy, or "manual" for heretic export --trial N
    rule: str = ""  # which rule of the policy chose the trial ("target, verified", ...)
    why: str = ""  # that rule in words, with the figures
    gate_message: str | None = None  # set when the damage gate kept the edit on the machine
    stop_reason: str = ""
    layer_profile: JsonDict | None = None
    judging: JsonDict | None = None  # run/judge_phase.py
    over_refusal: JsonDict | None = None
    benchmarks: JsonDict | None = None


def trial_row(t: FrozenTrial) -> TrialRow:
    """kl_divergence is the damage the search minimised (damage_metric); the two measures it
    may be are there by name too (answer_kl is None with damage_metric=first_token)."""
    s = score(t)
    rec = TrialRecord.read(t)
    return {
        "trial": s.number,
        "refusals": s.refusals,
        "kl_divergence": s.kl,
        "first_token_kl": rec.kl_divergence,
        "answer_kl": rec.answer_kl,
        "parameters": TrialRecord.read(t).parameters,
        "duration_s": TrialRecord.read(t).duration_s,
        "sample_responses": TrialRecord.read(t).sample_responses,
    }


def _gate_record(rec: RunRecord) -> GateRecord | None:
    """The damage gate's verdict (None: nothing verified, so nothing to judge by)."""
    if rec.verification is None:
        return None
    changed = 1.0 - rec.verification.selected.harmless_unchanged
    limit = rec.settings.get("max_changed_share")
    return {
        "max_changed_share": float(limit) if isinstance(limit, (int, float)) else None,
        "changed_share": round(changed, 4),
        "passed": rec.gate_message is None,
        "message": rec.gate_message,
    }


def build_report(rec: RunRecord) -> RunReport:
    durations = [TrialRecord.read(t).duration_s or 0.0 for t in rec.trials]
    timings = dict(rec.timings)
    timings["trials_total"] = timings.get("trials_total", float(sum(durations)))
    timings["trial_median"] = float(statistics.median(durations)) if durations else 0.0
    sel = rec.selected
    return {
        "heretic_version": __version__,
        "model": rec.model,
        "architecture": rec.architecture,
        "num_layers": rec.num_layers,
        "selected_trial": sel.number if sel else None,
        "sample_prompts": rec.sample_prompts,
        "base": {
            "refusals": rec.base_refusals,
            "n_harmful": rec.n_harmful,
            "n_harmless": rec.n_harmless,
            "kl_divergence": 0.0,
            "sample_responses": rec.base_samples,
        },
        "selected": None
        if sel is None
        else {
            "refusals": score(sel).refusals,
            "kl_divergence": score(sel).kl,
            "first_token_kl": TrialRecord.read(sel).kl_divergence,
            "answer_kl": TrialRecord.read(sel).answer_kl,
            "parameters": TrialRecord.read(sel).parameters,
            "sample_responses": TrialRecord.read(sel).sample_responses,
        },
        "verification": rec.verification.to_dict() if rec.verification else None,
        "policy": {
            "selection": rec.settings.get("selection"),
            "kl_cap": rec.settings.get("kl_cap"),
            "refusal_cap": rec.settings.get("refusal_cap"),
            "chosen_by": rec.chosen_by or rec.settings.get("selection"),
            "refusal_target": rec.settings.get("refusal_target"),
            "damage_metric": rec.settings.get("damage_metric"),
            "rule": rec.rule or None,
            "why": rec.why or None,
        },
        "gate": _gate_record(rec),
        "refusal_markers": rec.settings.get("refusal_markers", []),
        "pareto_front": [
            {"trial": s.number, "refusals": s.refusals, "kl_divergence": s.kl}
            for s in pareto_front(rec.trials)
        ],
        "trials": {
            "requested": rec.requested,
            "completed": len(rec.trials),
            "stop_reason": rec.stop_reason,
        },
        "layer_profile": rec.layer_profile,
        "judge": rec.judging,
        "over_refusal": rec.over_refusal,
        "benchmarks": rec.benchmarks,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "settings": rec.settings,
    }


def plot_pareto(
    trials: list[FrozenTrial],
    selected: int | None,
    path: Path,
    damage_label: str = "KL along the base answers",
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    scores = [score(t) for t in trials]
    front = pareto_front(trials)
    # A log axis (damage spans decades); a trial that changed nothing sits at the floor.
    positive = [s.kl for s in scores if s.kl > 0]
    floor = min(positive) / 2 if positive else 1e-6

    def x(s: TrialScore) -> float:
        return max(s.kl, floor)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.scatter(
        [x(s) for s in scores], [s.refusals for s in scores], s=14, alpha=0.5, label="trials"
    )
    ax.step(
        [x(s) for s in front],
        [s.refusals for s in front],
        where="post",
        color="C1",
        marker="o",
        label="Pareto front",
    )
    chosen: list[TrialScore] = [s for s in scores if s.number == selected]
    if chosen:
        ax.scatter(
            [x(chosen[0])],
            [chosen[0].refusals],
            s=90,
            facecolors="none",
            edgecolors="C3",
            linewidths=2,
            label=f"selected (trial {selected})",
        )
    ax.set_xlabel(f"damage: {damage_label} (log scale)")
    ax.set_ylabel("refusals (harmful prompts)")
    ax.set_xscale("log")
    # Plain decimal labels at every decade ("0.001", not "10^-3" or "-1.59898x10^-5").
    ax.xaxis.set_major_locator(LogLocator(base=10))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def write_run_files(rec: RunRecord, output: Path) -> RunReport:
    report = build_report(rec)
    output.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(trial_row(t)) + "\n" for t in rec.trials)
    write_atomic(output / "trials.jsonl", lines)
    if rec.trials:
        label = (
            "KL along the base answers"
            if rec.settings.get("damage_metric") == "answer"
            else "first-token KL"
        )
        plot_pareto(rec.trials, report["selected_trial"], output / "pareto.png", label)
    if rec.layer_profile:
        from heretic.run.layer_plot import plot_layer_profile

        selected = report["selected"]["parameters"] if report["selected"] else None
        plot_layer_profile(rec.layer_profile, selected, output / "layer_profile.png")
    write_atomic(output / "report.json", json.dumps(report, indent=2) + "\n")
    from heretic.run.model_card import render_model_card

    write_atomic(output / "README.md", render_model_card(report))
    return report
