"""The refusal judge: one interface for every way of deciding whether an answer refused.

A judge reads (request, answer) pairs and returns one verdict per pair: refused, complied or
other (an answer that is neither: off topic, empty of content, unreadable). The markers are
one judge (the default, free); a local model and an OpenAI-compatible endpoint are the others
(`heretic.judging`). Verdicts are cached by a `VerdictStore` (the study keeps one), so a
resumed run does not pay for a verdict twice.

"Refused" in the counts means refused or other: an answer that does not comply is not what
the user asked for, which is what the refusal count stands for.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from heretic.engine.evaluation import Evaluator, RefusalResult, is_refusal

Verdict = Literal["refused", "complied", "other"]
VERDICTS: tuple[Verdict, ...] = ("refused", "complied", "other")


@dataclass(frozen=True)
class Pair:
    request: str
    answer: str


class Judge(Protocol):
    """`name` identifies the judge in the report and in the verdict cache's keys: two judges
    with the same name must give the same verdicts."""

    name: str

    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]: ...

    def close(self) -> None: ...


class VerdictStore(Protocol):
    def get(self, key: str) -> Verdict | None: ...

    def put(self, items: dict[str, Verdict]) -> None: ...


def not_complied(verdict: Verdict) -> bool:
    return verdict != "complied"


class MarkerJudge:
    """Today's count as a judge: refused when the visible answer is empty or holds a marker."""

    name = "markers"

    def __init__(self, markers: Sequence[str], strip_thinking: bool = True) -> None:
        self.markers = list(markers)
        self.strip_thinking = strip_thinking

    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
        return [
            "refused" if is_refusal(p.answer, self.markers, self.strip_thinking) else "complied"
            for p in pairs
        ]

    def close(self) -> None:
        pass


def cache_key(judge_name: str, pair: Pair) -> str:
    digest = hashlib.sha256()
    for part in (judge_name, pair.request, pair.answer):
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")  # a separator no text holds, so parts cannot run together
    return digest.hexdigest()


class CachedJudge:
    """A judge whose verdicts are looked up in `store` first; only new pairs reach the judge,
    in one batch, and their verdicts are stored before they are returned."""

    def __init__(self, judge: Judge, store: VerdictStore) -> None:
        self.judge = judge
        self.store = store
        self.name = judge.name
        self.asked = 0  # pairs the judge itself was asked (not answered from the cache)

    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
        keys = [cache_key(self.name, p) for p in pairs]
        found: dict[str, Verdict] = {}
        for k in keys:
            hit = self.store.get(k)
            if hit is not None:
                found[k] = hit
        todo = {k: p for k, p in zip(keys, pairs, strict=True) if k not in found}
        if todo:
            new = self.judge.verdicts(list(todo.values()))
            self.asked += len(todo)
            fresh = dict(zip(todo, new, strict=True))
            self.store.put(fresh)
            found |= fresh
        return [found[k] for k in keys]

    def close(self) -> None:
        self.judge.close()


def judged_refusals(
    judge: Judge, requests: Sequence[str], answers: Sequence[str], marker_flags: Sequence[bool]
) -> list[bool]:
    """Refusal flags with the markers as a cheap first pass: an answer the markers flag stays
    a refusal (in the search it was cut at its marker, so nothing after it can be read), and
    only the others are read by the judge, which catches refusals without a marker."""
    todo = [i for i, flagged in enumerate(marker_flags) if not flagged]
    flags = list(marker_flags)
    verdicts = judge.verdicts([Pair(requests[i], answers[i]) for i in todo]) if todo else []
    for i, v in zip(todo, verdicts, strict=True):
        flags[i] = not_complied(v)
    return flags


class JudgedEvaluator(Evaluator):
    """An evaluator whose refusal count is a judge's (`judge_in_search`): the markers are the
    first pass, and the judge reads only the answers they let through. The markers' own count
    travels along (`RefusalResult.marker_count`) for the trial record."""

    judge: Judge

    @classmethod
    def wrapping(cls, evaluator: Evaluator, judge: Judge) -> JudgedEvaluator:
        """The same evaluator (prompts, budget, base reference), counting with `judge`."""
        judged = cls.__new__(cls)
        judged.__dict__.update(evaluator.__dict__)
        judged.judge = judge
        return judged

    def refusals(self) -> RefusalResult:
        markers = super().refusals()
        flags = judged_refusals(self.judge, self.harmful, markers.responses, markers.flags)
        return RefusalResult(sum(flags), len(flags), markers.responses, flags, markers.count)
