"""The shape of report.json, written once as types: the report, its verification record and
the best-so-far record are JSON on disk and in `--json` output, so they are TypedDicts (the
checker holds every reader and writer to these keys; the JSON stays exactly as it was)."""

from __future__ import annotations

from typing import TypedDict

from heretic.jsontypes import JsonDict


class SearchScore(TypedDict):
    refusals: int
    kl_divergence: float


class FrontRow(TypedDict):
    trial: int
    refusals: int
    kl_divergence: float


class MeasuredRecord(TypedDict):
    """One edit measured on the verification split."""

    trial: int | None
    refusals: int
    n_harmful: int
    kl_divergence: float  # the first-token KL
    answer_kl: float | None  # the answer damage (None: damage_metric=first_token)
    harmless_unchanged: float
    first_sentence_changed: float
    n_harmless: int


class ExampleRecord(TypedDict):
    prompt: str
    base: str
    edited: str


class AlternativeRecord(TypedDict):
    trial: int | None
    search: SearchScore
    verification: MeasuredRecord


class PromptCounts(TypedDict):
    harmful: int
    harmless: int


class BaseRefusals(TypedDict):
    refusals: int
    n_harmful: int


class ExampleSets(TypedDict):
    harmful: list[ExampleRecord]
    harmless: list[ExampleRecord]


class VerificationRecord(TypedDict):
    held_out: bool
    source: str
    prompts: PromptCounts
    search_prompts: PromptCounts
    max_response_tokens: int
    compare_tokens: int
    base: BaseRefusals
    selected: MeasuredRecord
    examples: ExampleSets
    alternatives: list[AlternativeRecord]


class BaseRecord(TypedDict):
    refusals: int
    n_harmful: int
    n_harmless: int
    kl_divergence: float
    sample_responses: list[str]


class SelectedRecord(TypedDict):
    refusals: int
    kl_divergence: float  # the damage the search minimised (policy.damage_metric)
    first_token_kl: float | None
    answer_kl: float | None
    parameters: JsonDict | None
    sample_responses: list[str]


class PolicyRecord(TypedDict):
    selection: str | None
    kl_cap: float | None
    refusal_cap: int | None
    chosen_by: str | None
    refusal_target: float | None
    damage_metric: str | None
    rule: str | None  # which rule of the policy chose the trial
    why: str | None  # that rule in words, with the figures


class GateRecord(TypedDict):
    """The damage gate: the chosen edit's share of held-back harmless answers changed."""

    max_changed_share: float | None
    changed_share: float
    passed: bool
    message: str | None


class TrialCounts(TypedDict):
    requested: int
    completed: int
    stop_reason: str


class RunReport(TypedDict):
    """report.json."""

    heretic_version: str
    model: str
    architecture: str
    num_layers: int
    selected_trial: int | None
    sample_prompts: list[str]
    base: BaseRecord
    selected: SelectedRecord | None
    verification: VerificationRecord | None
    policy: PolicyRecord
    gate: GateRecord | None
    refusal_markers: list[str]
    pareto_front: list[FrontRow]
    trials: TrialCounts
    layer_profile: JsonDict | None
    # run/judge_phase.py: measured only when asked (--judge, --benchmarks), else None
    judge: JsonDict | None
    over_refusal: JsonDict | None
    benchmarks: JsonDict | None
    timings_s: dict[str, float]
    settings: JsonDict


class TrialRow(TypedDict):
    """One line of trials.jsonl."""

    trial: int
    refusals: int
    kl_divergence: float  # the damage the search minimised (damage_metric)
    first_token_kl: float | None
    answer_kl: float | None
    parameters: JsonDict | None
    duration_s: float | None
    sample_responses: list[str]
