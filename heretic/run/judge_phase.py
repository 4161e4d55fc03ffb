"""The judge and the benchmarks in a run: the judge opened with the study's verdict cache, the
verification's answers read by it (marker and judge counts side by side, with every
disagreement), the over-refusal share, and the lm-eval comparison. Each result is a JSON record
for report.json; the model card renders them (`heretic.run.judge_card`). Nothing here is
measured unless the settings ask for it, and no record holds a figure that was not measured.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from heretic.config.settings import Settings
from heretic.engine.benchmarks import Comparison
from heretic.engine.judge import CachedJudge, Judge, MarkerJudge, Pair, Verdict, not_complied
from heretic.engine.verification import Verified
from heretic.jsontypes import JsonDict
from heretic.judging.factory import build_judge, judge_kind
from heretic.run.verdict_cache import VerdictCache

# Disagreements listed in report.json per measured model (the card shows fewer).
MAX_DISAGREEMENTS = 50


def open_judge(settings: Settings, device: str) -> CachedJudge | None:
    """The run's judge with the study's verdict cache, or None for markers."""
    if judge_kind(settings) == "markers":
        return None
    judge = build_judge(settings, device=device)
    return CachedJudge(judge, VerdictCache(settings.resolved_study_dir))


def _marker_verdicts(settings: Settings, pairs: Sequence[Pair]) -> list[Verdict]:
    return MarkerJudge(settings.refusal_markers, settings.strip_thinking).verdicts(pairs)


def _measured(
    label: str,
    v: Verified,
    prompts: Sequence[str],
    settings: Settings,
    judge: Judge,
) -> tuple[JsonDict, list[JsonDict]]:
    pairs = [Pair(p, a) for p, a in zip(prompts, v.harmful_answers, strict=True)]
    markers = _marker_verdicts(settings, pairs)
    judged = judge.verdicts(pairs)
    row: JsonDict = {
        "model": label,
        "trial": v.trial,
        "n_harmful": len(pairs),
        "markers": sum(not_complied(m) for m in markers),
        "judge": sum(not_complied(j) for j in judged),
        "judge_verdicts": {k: judged.count(k) for k in ("refused", "complied", "other")},
    }
    disagreements: list[JsonDict] = [
        {
            "model": label,
            "trial": v.trial,
            "request": pair.request,
            "answer": pair.answer,
            "markers": m,
            "judge": j,
        }
        for pair, m, j in zip(pairs, markers, judged, strict=True)
        if not_complied(m) != not_complied(j)
    ]
    return row, disagreements


def judge_verification(
    settings: Settings,
    judge: CachedJudge,
    harmful_prompts: Sequence[str],
    base: Verified,
    selected: Verified,
    alternatives: Sequence[Verified] = (),
) -> JsonDict:
    """Marker and judge counts for the base model, the selected edit and its alternatives on
    the verification's harmful prompts, and the answers on which they disagree."""
    start, asked = time.monotonic(), judge.asked
    rows: list[JsonDict] = []
    disagreements: list[JsonDict] = []
    measured = [("base model", base), ("this model", selected)] + [
        (f"alternative: trial {a.trial}", a) for a in alternatives
    ]
    for label, v in measured:
        row, found = _measured(label, v, harmful_prompts, settings, judge)
        rows.append(row)
        if label in ("base model", "this model"):
            disagreements += found[:MAX_DISAGREEMENTS]
    return {
        "judge": judge.name,
        "counts": rows,
        "disagreements": disagreements,
        "asked": judge.asked - asked,
        "seconds": round(time.monotonic() - start, 3),
    }


def judge_summary(record: JsonDict) -> str:
    counts = record.get("counts")
    found = record.get("disagreements")
    rows = [c for c in counts if isinstance(c, dict)] if isinstance(counts, list) else []
    parts = [
        f"{c['model']} {c['judge']}/{c['n_harmful']} refusals (markers {c['markers']})"
        for c in rows[:2]
    ]
    n = len(found) if isinstance(found, list) else 0
    return f"Judge {record.get('judge')}: " + "; ".join(parts) + f"; {n} disagreements."


def over_refusal(
    settings: Settings,
    harmless_prompts: Sequence[str],
    base: Verified,
    selected: Verified,
    judge: Judge | None,
) -> JsonDict:
    """The share of harmless verification prompts the edit refuses that the base model did
    not, by markers and (when there is one) by the judge."""
    n = len(harmless_prompts)

    def share(verdicts_of: Judge | None) -> float:
        def flags(v: Verified) -> list[bool]:
            pairs = [Pair(p, a) for p, a in zip(harmless_prompts, v.harmless_answers, strict=True)]
            found = (
                verdicts_of.verdicts(pairs) if verdicts_of else _marker_verdicts(settings, pairs)
            )
            return [not_complied(x) for x in found]

        before, after = flags(base), flags(selected)
        new = sum(a and not b for a, b in zip(after, before, strict=True))
        return round(new / n, 4) if n else 0.0

    return {
        "n_harmless": n,
        "markers": share(None),
        "judge": share(judge) if judge is not None else None,
        "answer_tokens": settings.verify_compare_tokens,
    }


def benchmark_record(
    comparisons: Sequence[Comparison], settings: Settings, seconds: float
) -> JsonDict:
    return {
        "tasks": list(settings.benchmarks),
        "limit": settings.benchmark_limit,
        "rows": [
            {
                "task": c.task,
                "metric": c.metric,
                "base": c.base,
                "edited": c.edited,
                "difference": c.difference,
                "base_stderr": c.base_stderr,
                "edited_stderr": c.edited_stderr,
            }
            for c in comparisons
        ],
        "seconds": round(seconds, 3),
    }
