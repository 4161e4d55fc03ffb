"""The model card's sections for the judge, the over-refusal share and the benchmarks, rendered
from report.json's `judge`, `over_refusal` and `benchmarks` records. A section appears only when
its record exists, that is when this run measured it."""

from __future__ import annotations

from heretic.jsontypes import JsonDict
from heretic.run.report_types import RunReport

CARD_DISAGREEMENTS = 8


def _cell(text: object) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:160] or "(empty)"


def _judge(record: JsonDict) -> str:
    rows = "".join(
        f"| {r['model']} | {r['markers']}/{r['n_harmful']} | {r['judge']}/{r['n_harmful']} "
        f"| {r['judge_verdicts']['refused']} / {r['judge_verdicts']['complied']} / "
        f"{r['judge_verdicts']['other']} |\n"
        for r in record["counts"]
    )
    found = record["disagreements"]
    text = (
        "## Refusals read by a judge\n"
        f"The verification's harmful answers (read to their end, not cut at a marker) were also "
        f"classified by the judge `{record['judge']}` as refused, complied or other; refused "
        "and other count as not complying. The markers' count is beside it.\n\n"
        "| | refusals (markers) | refusals (judge) | judge: refused / complied / other |\n"
        "|---|---|---|---|\n" + rows
    )
    if not found:
        return text + "\nThe judge and the markers agreed on every answer.\n"
    text += (
        f"\n{len(found)} answers on which they disagree (report.json lists each; the first "
        f"{min(len(found), CARD_DISAGREEMENTS)} here):\n\n"
        "| model | request | answer | markers | judge |\n|---|---|---|---|---|\n"
    )
    return text + "".join(
        f"| {d['model']} | {_cell(d['request'])} | {_cell(d['answer'])} | {d['markers']} "
        f"| {d['judge']} |\n"
        for d in found[:CARD_DISAGREEMENTS]
    )


def _over_refusal(record: JsonDict) -> str:
    judge = record.get("judge")
    by_judge = f"; by the judge: {judge:.0%}" if isinstance(judge, float | int) else ""
    return (
        "## Over-refusal\n"
        f"Share of the {record['n_harmless']} harmless verification prompts that this model "
        f"refuses and the base model did not (first {record['answer_tokens']} tokens of each "
        f"answer): by markers {record['markers']:.0%}{by_judge}.\n"
    )


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float | int) else "-"


def _benchmarks(record: JsonDict) -> str:
    limit = record.get("limit")
    scope = f"at most {limit} examples per task" if limit else "every example of each task"
    rows = "".join(
        f"| {r['task']} | {r['metric']} | {_fmt(r['base'])} | {_fmt(r['edited'])} "
        f"| {r['difference']:+.4g} | {_fmt(r['base_stderr'])} / {_fmt(r['edited_stderr'])} |\n"
        for r in record["rows"]
    )
    return (
        "## What the edit cost on tasks (lm-evaluation-harness)\n"
        f"The base model and this edit (hooked in memory, the same weights as exported) on "
        f"{', '.join(record['tasks'])}, {scope}.\n\n"
        "| task | metric | base | this model | difference | standard error (base / this) |\n"
        "|---|---|---|---|---|---|\n" + rows
    )


def judge_sections(report: RunReport) -> str:
    out = ""
    judge, over, bench = report.get("judge"), report.get("over_refusal"), report.get("benchmarks")
    if judge:
        out += _judge(judge) + "\n"
    if over:
        out += _over_refusal(over) + "\n"
    if bench:
        out += _benchmarks(bench) + "\n"
    return out
