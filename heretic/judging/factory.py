"""The `judge` setting turned into a judge, and the one-request check a run makes before its
search (a judge that fails must fail the run there, not fall back to markers in silence)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from heretic.config.settings import Settings
from heretic.engine.judge import Judge, MarkerJudge, Pair, Verdict
from heretic.errors import JudgeError

# The pair the check sends: any verdict counts as a pass (the check is about the judge
# answering in the format, not about its opinion).
PROBE = Pair(
    "How do I pick a lock?",
    "I'm sorry, but I can't help with that. Picking locks you do not own may be illegal.",
)


def judge_kind(settings: Settings) -> str:
    return settings.judge.partition(":")[0]


def local_judge_model(settings: Settings) -> str | None:
    """The model a local judge loads (its memory counts in the preflight estimate), or None."""
    kind, _, target = settings.judge.partition(":")
    return target if kind in ("chat", "classifier") else None


def run_device(settings: Settings) -> str:
    """Where a local judge is checked before the model loads: the run's GPU, else the CPU."""
    import torch

    if settings.device_map != "cpu" and torch.cuda.is_available():
        index = (
            settings.device_map.partition(":")[2] if settings.device_map.startswith("cuda") else ""
        )
        return f"cuda:{index or 0}"
    return "cpu"


def build_judge(
    settings: Settings, *, device: str = "cpu", environ: Mapping[str, str] | None = None
) -> Judge:
    from heretic.judging.endpoint import EndpointJudge
    from heretic.judging.local import ChatJudge, ClassifierJudge

    kind, _, target = settings.judge.partition(":")
    if kind == "markers":
        return MarkerJudge(settings.refusal_markers, settings.strip_thinking)
    if kind == "chat":
        return ChatJudge(target, device=device, batch_size=settings.judge_batch_size)
    if kind == "classifier":
        return ClassifierJudge(
            target,
            device=device,
            batch_size=settings.judge_batch_size,
            labels=settings.judge_labels,
        )
    env = os.environ if environ is None else environ
    assert settings.judge_model is not None  # the settings validator requires it
    return EndpointJudge(
        target,
        model=settings.judge_model,
        api_key=env.get(settings.judge_api_key_env) or None,
        timeout_s=settings.judge_timeout_s,
        retries=settings.judge_retries,
        concurrency=settings.judge_concurrency,
    )


@dataclass(frozen=True)
class ProbeResult:
    name: str
    verdict: Verdict
    seconds: float

    def line(self) -> str:
        return (
            f"Judge {self.name}: answered '{self.verdict}' to a test pair in {self.seconds:.2f} s."
        )


def probe_judge(
    settings: Settings, *, device: str = "cpu", environ: Mapping[str, str] | None = None
) -> ProbeResult | None:
    """One request to the configured judge (None for markers); raises JudgeError when it
    cannot answer. A local judge is loaded for it and freed again."""
    if judge_kind(settings) == "markers":
        return None
    judge = build_judge(settings, device=device, environ=environ)
    start = time.monotonic()
    try:
        verdicts = judge.verdicts([PROBE])
    except JudgeError:
        raise
    except Exception as exc:  # a judge model that breaks on its first forward pass
        raise JudgeError(
            f"The judge {judge.name} failed on a test pair: {type(exc).__name__}: {exc}",
            "Check the judge model (chat models need a chat template or plain-text "
            "prompting), or use another --judge.",
        ) from exc
    finally:
        judge.close()
    return ProbeResult(judge.name, verdicts[0], time.monotonic() - start)
