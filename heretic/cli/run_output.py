"""Prints a run's outcome: a summary table on stderr (humans), the report as JSON on stdout
when asked (machines)."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from heretic.run.execution import Outcome
from heretic.run.report_types import MeasuredRecord, RunReport, VerificationRecord


def fmt_kl(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-3 or value == 0 else f"{value:.2e}"


def summary_table(report: RunReport) -> Table:
    base, sel = report["base"], report.get("selected")
    n = base["n_harmful"]
    table = Table(title=f"heretic: {report['model']}")
    table.add_column("")
    table.add_column("refusals", justify="right")
    table.add_column("damage (KL)", justify="right")
    table.add_row("base model", f"{base['refusals']}/{n}", "0")
    if sel:
        table.add_row(
            f"selected (trial {report['selected_trial']})",
            f"{sel['refusals']}/{n}",
            fmt_kl(sel["kl_divergence"]),
        )
    verify = report.get("verification")
    if verify:
        _verification_rows(table, verify)
    front = report.get("pareto_front", [])
    for row in front[:8]:
        table.add_row(
            f"  pareto: trial {row['trial']}",
            f"{row['refusals']}/{n}",
            fmt_kl(row["kl_divergence"]),
        )
    t = report["timings_s"]
    table.caption = (
        f"{report['trials']['completed']}/{report['trials']['requested']} trials; total "
        f"{t.get('total', 0):.0f}s, load {t.get('load', 0):.1f}s, residuals "
        f"{t.get('residuals', 0):.1f}s, median trial {t.get('trial_median', 0):.2f}s, export "
        f"{t.get('export', 0):.1f}s"
    )
    return table


def _verification_rows(table: Table, verify: VerificationRecord) -> None:
    nh = verify["prompts"]["harmful"]
    label = "verification" if verify["held_out"] else "re-check (search prompts)"
    table.add_row(
        f"{label}, {verify['max_response_tokens']} tokens: base",
        f"{verify['base']['refusals']}/{nh}",
        "0",
    )
    for row in [verify["selected"], *(a["verification"] for a in verify.get("alternatives", []))]:
        kind = "selected" if row is verify["selected"] else "alternative"
        table.add_row(
            f"  {kind} trial {row['trial']} ({row['harmless_unchanged']:.0%} harmless unchanged)",
            f"{row['refusals']}/{nh}",
            fmt_kl(_damage(row)),
        )


def _damage(row: MeasuredRecord) -> float:
    """A verified edit's damage: the answer KL, or the first-token KL where that was the
    measure (damage_metric=first_token, or a report from before the answer damage)."""
    answer = row.get("answer_kl")
    return answer if answer is not None else row["kl_divergence"]


def print_summary(outcome: Outcome, *, as_json: bool) -> None:
    console = Console(stderr=True)
    if outcome.report:
        console.print(summary_table(outcome.report))
    # Plain writes: paths and URLs must not be wrapped or styled in logs.
    if outcome.model_dir:
        sys.stderr.write(f"Model: {outcome.model_dir}\n")
    if outcome.extra.get("upload_url"):
        sys.stderr.write(f"Uploaded: {outcome.extra['upload_url']}\n")
    if outcome.notice:
        sys.stderr.write(f"{outcome.notice}\n")
    if outcome.message:
        sys.stderr.write(f"error: {outcome.message}\n")
    if as_json and outcome.report:
        sys.stdout.write(json.dumps(outcome.report, indent=2) + "\n")
