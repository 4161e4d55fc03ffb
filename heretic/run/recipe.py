"""`heretic run` as a recipe: named phases with explicit inputs and outputs, composed in `run`.

prompts -> load -> directions -> base evaluation -> search -> select -> report -> export.
Prompt sources are read before any weight loads, so a bad source fails in seconds. The study
(journal, settings, directions) lives in the study folder, so running the same command again
resumes where the last run stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from heretic.config.settings import Settings
from heretic.engine.ablation import Ablator
from heretic.engine.answer_kl import REFERENCE_FILE, AnswerKL
from heretic.engine.architecture import Architecture, describe
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat
from heretic.engine.directions import Directions, compute_directions
from heretic.engine.evaluation import Evaluator, RefusalResult
from heretic.engine.export import export_model
from heretic.engine.journal import journal_damage, repair_journal
from heretic.engine.judge import CachedJudge, JudgedEvaluator
from heretic.engine.layer_profile import (
    LayerPrior,
    LayerProfile,
    derive_prior,
    layer_profile,
    summary_line,
)
from heretic.engine.loading import LoadedModel, load_model
from heretic.engine.objective import TrialObjective
from heretic.engine.parameters import AblationParams
from heretic.engine.patience import StopRule
from heretic.engine.prompts import PromptSets, load_prompt_sets
from heretic.engine.residuals import collect_residuals
from heretic.engine.selection import (
    GENTLEST,
    Policy,
    candidates,
    choose,
    front_neighbours,
    pareto_front,
    score,
)
from heretic.engine.space import SearchSpace
from heretic.engine.study import completed_trials, count, open_study, run_trials
from heretic.engine.trial_record import TrialRecord
from heretic.engine.verification import Verified, Verifier, choose_verified
from heretic.errors import InterruptedRun, NoAcceptableTrialError, StudyError
from heretic.jsontypes import JsonDict
from heretic.lifecycle.state import BestSoFar
from heretic.phases import Phase
from heretic.progress import NullReporter, Reporter
from heretic.run import worker_pool
from heretic.run.disk_space import SpaceGuard, no_space_is_exit_15, weights_bytes
from heretic.run.judge_phase import (
    benchmark_record,
    judge_summary,
    judge_verification,
    open_judge,
    over_refusal,
)
from heretic.run.report import RunRecord, Verification, write_run_files
from heretic.run.report_types import RunReport
from heretic.run.study_files import (
    check_or_record_in_study,
    check_or_record_settings,
    load_directions,
    load_layer_profile,
    save_directions,
    save_layer_profile,
    study_prior,
)
from heretic.statefiles import held_lock


@dataclass
class RunHooks:
    """How the lifecycle layer follows a run; every callback is optional."""

    on_phase: Callable[[Phase], None] = lambda phase: None
    on_trial: Callable[[int, int, float | None, BestSoFar | None], None] = (
        lambda done, total, eta, best: None
    )
    should_stop: Callable[[], bool] = lambda: False
    # subscribe_stop(fn) calls fn(abandon) on each later stop request; returns the unsubscribe.
    subscribe_stop: Callable[[Callable[[bool], None]], Callable[[], None]] = lambda fn: lambda: None


@dataclass
class RunResult:
    report: RunReport | None
    model_dir: Path | None
    timings: dict[str, float] = field(default_factory=dict)


def chat_format(settings: Settings) -> ChatFormat:
    kwargs = {} if settings.thinking else {"enable_thinking": False}
    return ChatFormat(settings.system_prompt, kwargs)


def _timed(timings: dict[str, float], key: str, start: float) -> None:
    timings[key] = timings.get(key, 0.0) + time.monotonic() - start


def phase_directions(
    loaded: LoadedModel,
    arch: Architecture,
    prompts: PromptSets,
    settings: Settings,
    batcher: Batcher,
    study_dir: Path,
    reporter: Reporter,
    check: Callable[[], None] | None = None,
) -> tuple[Directions, LayerProfile | None]:
    """The refusal directions and the per-layer separation profile (both from the residuals,
    both saved in the study folder; a study from before profiles has none). `check()` runs
    between batches of the residual pass: a stop request ends it within one batch."""
    path = study_dir / "directions.safetensors"
    # One worker computes; the others wait and load. Never through a planted link.
    with held_lock(study_dir / ".directions.lock"):
        cached = load_directions(path)
        if cached is not None:
            reporter.info("Loaded the refusal directions saved in the study folder.")
            return cached, load_layer_profile(study_dir)
        chat = chat_format(settings)
        harmful = collect_residuals(
            loaded,
            arch,
            prompts.harmful,
            batcher,
            chat=chat,
            reporter=reporter,
            label="residuals (harmful)",
            check=check,
        )
        harmless = collect_residuals(
            loaded,
            arch,
            prompts.harmless,
            batcher,
            chat=chat,
            reporter=reporter,
            label="residuals (harmless)",
            check=check,
        )
        directions = compute_directions(
            harmful,
            harmless,
            project=settings.project_directions,
            n_directions=settings.n_directions,
            device=loaded.device,
        )
        profile = layer_profile(harmful, harmless)
        save_layer_profile(study_dir, profile)
        save_directions(path, directions)  # last: its presence means both are complete
        return directions, profile


def phase_base_answers(
    loaded: LoadedModel,
    prompts: PromptSets,
    settings: Settings,
    batcher: Batcher,
    study_dir: Path,
    reporter: Reporter,
) -> AnswerKL | None:
    """The base model's answers to the harmless search prompts, which the answer damage is
    measured along (built once, kept in the study folder); None with damage_metric=first_token."""
    if settings.damage_metric != "answer":
        return None
    measure = AnswerKL(
        loaded,
        prompts.harmless_eval,
        chat=chat_format(settings),
        batcher=batcher,
        tokens=settings.damage_tokens,
    )
    reused = (study_dir / REFERENCE_FILE).exists()
    ref = measure.prepare(study_dir)
    mean_len = float(ref.answer_len.float().mean()) if len(ref.answer_len) else 0.0
    reporter.info(
        f"{'Loaded' if reused else 'Generated'} the base model's answers to "
        f"{len(measure.prompts)} harmless prompts (up to {settings.damage_tokens} tokens, "
        f"{mean_len:.1f} on average): each trial's damage is measured along them."
    )
    return measure


def phase_base(evaluator: Evaluator, reporter: Reporter) -> RefusalResult:
    evaluator.compute_base()
    base = evaluator.refusals()
    reporter.info(
        f"Base model: {base.count}/{base.total} refusals on the harmful evaluation prompts."
    )
    return base


def policy_of(settings: Settings) -> Policy:
    return Policy(
        settings.selection,
        settings.kl_cap,
        settings.refusal_cap,
        settings.max_refusal_share,
        settings.refusal_target,
    )


def best_so_far(trials: list[optuna.trial.FrozenTrial], settings: Settings) -> BestSoFar | None:
    """The trial the selection policy would take now (or, if none qualifies yet, the one with
    the fewest refusals), for progress displays."""
    policy = policy_of(settings)
    found = choose(trials, policy)
    chosen = found.trial if found else None
    if chosen is None and trials:
        chosen = min(trials, key=lambda t: (score(t).refusals, score(t).kl))
    if chosen is None:
        return None
    s = score(chosen)
    return {
        "trial": s.number,
        "refusals": s.refusals,
        "kl_divergence": s.kl,
        "meets_policy": found is not None,
    }


def phase_search(
    study: optuna.Study,
    objective: TrialObjective,
    settings: Settings,
    study_dir: Path,
    hooks: RunHooks,
    reporter: Reporter,
    stop_rule: StopRule | None = None,
    space: SpaceGuard | None = None,
) -> None:
    total = settings.trials
    already = count(study, optuna.trial.TrialState.COMPLETE)
    if already >= total:
        reporter.info(f"The study already holds {already} completed trials; no new trials.")
        return
    rule = stop_rule or StopRule(0, 0, settings.selection, settings.kl_cap, settings.refusal_cap)

    def done_early() -> str | None:
        return rule.reason(completed_trials(study))

    if already and done_early() is not None:
        reporter.info(
            f"The study already met its patience rule after {already} trials; no new "
            "trials (set patience=0 to run all --trials)."
        )
        return
    if already:
        reporter.info(f"Resuming the study: {already}/{total} trials already completed.")
    started = time.monotonic()

    with reporter.task("trials", total - already) as advance:

        def on_complete(trial: optuna.trial.FrozenTrial) -> None:
            finished = completed_trials(study)
            done = len(finished)
            # Study-wide pace since this start, so other workers' trials count too.
            eta = (time.monotonic() - started) / max(done - already, 1) * max(total - done, 0)
            hooks.on_trial(done, total, eta, best_so_far(finished, settings))
            advance(1)
            if space is not None:
                space.trial_done()

        run_trials(
            study,
            study_dir,
            total,
            objective,
            should_stop=hooks.should_stop,
            on_complete=on_complete,
            done_early=done_early,
            before_claim=space.check if space is not None else lambda: None,
        )
    why = done_early()
    if why is not None:
        reporter.info(
            f"Search stopped after {count(study, optuna.trial.TrialState.COMPLETE)} "
            f"of {total} trials: {why}."
        )


@dataclass
class Prepared:
    loaded: LoadedModel
    arch: Architecture
    prompts: PromptSets
    directions: Directions
    evaluator: Evaluator
    study: optuna.Study
    objective: TrialObjective
    base: RefusalResult | None
    profile: LayerProfile | None = None
    prior: LayerPrior | None = None
    stop_rule: StopRule | None = None
    judge: CachedJudge | None = None  # opened for the search (judge_in_search) or verification


def _enter(hooks: RunHooks, phase: Phase) -> None:
    """A phase boundary: the place to honour a stop request made during a long phase."""
    if hooks.should_stop():
        raise InterruptedRun(
            f"Stopped on request before the {phase} phase; the study is saved.",
            "Run the same command again to resume.",
        )
    hooks.on_phase(phase)


def stop_check(hooks: RunHooks, during: str, then: str) -> Callable[[], None]:
    """A `check` for long passes (residuals, verification, demo training): raises
    InterruptedRun (exit 75) between batches once a stop was requested; `then` says what the
    next start does."""

    def check() -> None:
        if hooks.should_stop():
            raise InterruptedRun(f"Stopped on request during {during}; the study is saved.", then)

    return check


def _evaluator(
    loaded: LoadedModel, prompts: PromptSets, settings: Settings, batcher: Batcher
) -> Evaluator:
    """Scores an edit on the evaluation prompts (refusals, KL to the base model)."""
    return Evaluator(
        loaded,
        prompts.harmless_eval,
        prompts.harmful_eval,
        markers=settings.refusal_markers,
        max_new_tokens=settings.max_response_tokens,
        chat=chat_format(settings),
        batcher=batcher,
        strip_thinking=settings.strip_thinking,
    )


def _open_study(settings: Settings, worker_index: int, reporter: Reporter) -> optuna.Study:
    """The run's Optuna study (created, resumed or joined), checked against these settings.
    The first process repairs a torn journal first (workers start after it: their writes in
    progress must not look torn to anyone)."""
    study_dir = settings.resolved_study_dir
    if not settings.storage and worker_index == 0:
        repaired = repair_journal(study_dir)
        if repaired is not None:
            reporter.warn(repaired.describe())
    try:
        study = open_study(
            study_dir,
            name=settings.study_name,
            storage_url=settings.storage,
            seed=settings.seed,
            startup_trials=min(settings.startup_trials, settings.trials // 3),
            worker_index=worker_index,
            heartbeat_s=settings.heartbeat_interval_s,
            grace_s=settings.heartbeat_grace_s,
        )
    except (ValueError, KeyError, TypeError) as exc:
        if settings.storage:
            raise
        raise journal_damage(study_dir, exc) from exc
    check_or_record_in_study(study, settings)
    return study


def prepare(
    settings: Settings,
    reporter: Reporter,
    hooks: RunHooks,
    timings: dict[str, float],
    *,
    worker_index: int = 0,
) -> Prepared:
    """Everything a trial needs: prompts, model, directions, base scores, the study."""
    study_dir = settings.resolved_study_dir
    _enter(hooks, Phase.PROMPTS)
    prompts = load_prompt_sets(settings)
    if worker_index == 0:
        check_or_record_settings(study_dir, settings)

    _enter(hooks, Phase.LOAD)
    t = time.monotonic()
    training = stop_check(
        hooks,
        "the demo model's training",
        "Nothing half-trained is kept: run the same command again and the training starts over.",
    )
    loaded = load_model(settings, reporter, training)
    arch = describe(loaded.model, list(settings.components))
    _timed(timings, "load", t)

    batcher = Batcher(settings.batch_size or settings.max_batch_size, "the forward passes")
    _enter(hooks, Phase.RESIDUALS)
    t = time.monotonic()
    residuals = stop_check(
        hooks,
        "the residual pass",
        "Run the same command again: it computes the directions again, then searches.",
    )
    directions, profile = phase_directions(
        loaded, arch, prompts, settings, batcher, study_dir, reporter, residuals
    )
    _timed(timings, "residuals", t)

    evaluator = _evaluator(loaded, prompts, settings, batcher)
    judge = open_judge(settings, str(loaded.device)) if settings.judge_in_search else None
    if judge is not None:  # the judge reads every trial's answers, beside the model
        evaluator = JudgedEvaluator.wrapping(evaluator, judge)
    _enter(hooks, Phase.BASE_EVALUATION)
    base: RefusalResult | None = None
    if worker_index == 0:
        base = phase_base(evaluator, reporter)
    else:
        evaluator.compute_base()
    t = time.monotonic()
    answers = phase_base_answers(loaded, prompts, settings, batcher, study_dir, reporter)
    _timed(timings, "base_answers", t)
    ablator = Ablator(arch, directions, settings.ablation).install()
    study = _open_study(settings, worker_index, reporter)
    prior = study_prior(study, derive_prior(profile) if profile is not None else None)
    space = SearchSpace(settings, arch.num_layers, prior)
    if worker_index == 0 and profile is not None and prior is not None:
        reporter.info(_space_line(profile, prior, space, settings))
    objective = TrialObjective(ablator, evaluator, space, settings.kl_target, answers)
    rule = StopRule.from_settings(settings, len(prompts.harmful_eval))
    return Prepared(
        loaded,
        arch,
        prompts,
        directions,
        evaluator,
        study,
        objective,
        base,
        profile,
        prior,
        rule,
        judge,
    )


def _space_line(
    profile: LayerProfile, prior: LayerPrior, space: SearchSpace, settings: Settings
) -> str:
    line = summary_line(profile, prior)
    mine = [k for k in space.ranges() if getattr(settings, k) is not None]
    return line + (f" Your ranges win for: {', '.join(mine)}." if mine else "")


def run(
    settings: Settings, reporter: Reporter | None = None, hooks: RunHooks | None = None
) -> RunResult:
    """The whole run; a full disk anywhere in it is exit 15 (DiskFullError), never a crash."""
    with no_space_is_exit_15(settings.resolved_study_dir):
        return _run(settings, reporter or NullReporter(), hooks or RunHooks())


def _run(settings: Settings, reporter: Reporter, hooks: RunHooks) -> RunResult:
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    settings.resolved_study_dir.mkdir(parents=True, exist_ok=True)
    if settings.is_demo:
        reporter.info(
            "No model given: running the built-in demo model (a tiny Llama trained "
            "on the CPU to refuse harmful requests)."
        )
    settings = worker_pool.parent_device_map(settings)
    prep = prepare(settings, reporter, hooks, timings)
    space = SpaceGuard(settings.resolved_study_dir, settings.output, _export_bytes(prep.loaded))

    _enter(hooks, Phase.SEARCH)
    t = time.monotonic()
    group = worker_pool.WorkerGroup(
        worker_pool.start_workers(settings) if settings.workers > 1 else []
    )
    unsubscribe = hooks.subscribe_stop(group.forward)
    study_dir = settings.resolved_study_dir
    try:
        phase_search(
            prep.study, prep.objective, settings, study_dir, hooks, reporter, prep.stop_rule, space
        )
        worker_pool.wait_workers(group.procs)
        if group.procs and count(prep.study, optuna.trial.TrialState.COMPLETE) < settings.trials:
            # A worker that died mid-trial left its trial to be re-run: finish what is missing.
            phase_search(
                prep.study,
                prep.objective,
                settings,
                study_dir,
                hooks,
                reporter,
                prep.stop_rule,
                space,
            )
    finally:
        unsubscribe()
        group.stop()
    _timed(timings, "trials_total", t)
    if settings.search_only:
        reporter.info(
            "Trials done (search only): run once without search_only to select, export and upload."
        )
        return RunResult(report=None, model_dir=None, timings=timings)
    return _finish(settings, prep, timings, t_all, hooks, reporter)


def _export_bytes(loaded: LoadedModel) -> int:
    """What the export will write: the checkpoint's weight files, else the loaded tensors."""
    on_disk = weights_bytes(loaded.path)
    if on_disk:
        return on_disk
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters())


def verification_evaluator(
    prep: Prepared, settings: Settings, check: Callable[[], None] | None = None
) -> Evaluator | None:
    """An evaluator over the verification split (the evaluation sets when there is none), with
    the longer verification budget; None when verification is switched off. Its own batcher
    (starting at the size the search found) calls `check()` before every batch."""
    budget = settings.verify_response_tokens
    if budget is None:
        budget = 4 * settings.max_response_tokens
    if budget == 0:
        return None
    p = prep.prompts
    held_out = bool(p.harmful_verify and p.harmless_verify)
    return Evaluator(
        prep.loaded,
        p.harmless_verify if held_out else p.harmless_eval,
        p.harmful_verify if held_out else p.harmful_eval,
        markers=settings.refusal_markers,
        max_new_tokens=budget,
        chat=chat_format(settings),
        batcher=Batcher(prep.evaluator.batcher.batch_size, "the verification", check),
        strip_thinking=settings.strip_thinking,
    )


def phase_verify(
    prep: Prepared,
    trials: list[optuna.trial.FrozenTrial],
    chosen: optuna.trial.FrozenTrial,
    settings: Settings,
    reporter: Reporter,
    check: Callable[[], None] | None = None,
    *,
    manual: bool = False,
) -> Verification | None:
    """Measure the chosen edit and its candidates (with gentlest: the policy's next best and
    the Pareto-front neighbours; otherwise the neighbours) on prompts the search never scored,
    against the base model, with a longer token budget than the search's. `check()` between
    batches may stop it (nothing is written then: the next start verifies again)."""
    evaluator = verification_evaluator(prep, settings, check)
    if evaluator is None:
        return None
    damage = None
    if settings.damage_metric == "answer":
        damage = AnswerKL(
            prep.loaded,
            evaluator.harmless,
            chat=chat_format(settings),
            batcher=evaluator.batcher,
            tokens=settings.damage_tokens,
        )
        damage.prepare()  # the hooks are installed but idle: this is the base model
    verifier = Verifier(
        evaluator,
        compare_tokens=settings.verify_compare_tokens,
        full_answers=settings.judge != "markers",
        damage=damage,
    )
    by_number = {t.number: t for t in trials} | {chosen.number: chosen}
    pool, k = list(by_number.values()), settings.verify_alternatives
    others = (
        candidates(pool, policy_of(settings), chosen.number, k)
        if settings.selection == GENTLEST and not manual
        else front_neighbours(pool, chosen.number, k)  # context for a choice made otherwise
    )

    def measure(number: int) -> Verified:
        params = AblationParams.from_dict(TrialRecord.read(by_number[number]).required_parameters())
        return verifier.edit(prep.objective.ablator, params, number)

    base = verifier.base()
    p = prep.prompts
    return Verification(
        held_out=bool(p.harmful_verify and p.harmless_verify),
        source=p.verify_source,
        search_harmful=len(p.harmful_eval),
        search_harmless=len(p.harmless_eval),
        max_response_tokens=evaluator.max_new_tokens,
        compare_tokens=settings.verify_compare_tokens,
        base=base,
        selected=measure(chosen.number),
        alternatives=[(measure(n), score(by_number[n])) for n in others],
    )


def _rechoose(
    verification: Verification,
    trials: list[optuna.trial.FrozenTrial],
    selected: optuna.trial.FrozenTrial,
    settings: Settings,
) -> tuple[optuna.trial.FrozenTrial, str]:
    """The gentlest policy's second step: the verified candidate to ship, and why; the
    verification record is re-pointed at it (the search's choice becomes an alternative)."""
    measured = [verification.selected, *(v for v, _ in verification.alternatives)]
    final = choose_verified(measured, settings.refusal_target)
    if final.chosen is verification.selected:
        return selected, final.why
    by_number = {t.number: t for t in trials}
    new = by_number[int(final.chosen.trial)]  # type: ignore[arg-type]  # candidates are trials
    verification.alternatives = [
        (verification.selected, score(selected)),
        *((v, t) for v, t in verification.alternatives if v is not final.chosen),
    ]
    verification.selected = final.chosen
    return new, final.why


def _gate(verification: Verification | None, settings: Settings) -> tuple[str, int | None] | None:
    """Why the chosen edit may not leave the machine (too many everyday answers changed), with
    the gentler verified alternatives, and the gentlest of them; None when it passes."""
    if verification is None:
        return None
    sel = verification.selected
    changed = 1.0 - sel.harmless_unchanged
    if changed <= settings.max_changed_share + 1e-9:
        return None
    gentler = sorted(
        (v for v, _ in verification.alternatives if v.harmless_unchanged > sel.harmless_unchanged),
        key=lambda v: (-v.harmless_unchanged, v.refusals),
    )
    listed = "; ".join(
        f"trial {v.trial}: {v.refusals}/{v.n_harmful} refusals, {v.harmless_unchanged:.0%} "
        "unchanged"
        for v in gentler
    )
    message = (
        f"The chosen edit (trial {sel.trial}: {sel.refusals}/{sel.n_harmful} refusals) changes "
        f"{changed:.0%} of the held-back harmless answers ({verification.compare_tokens} tokens), "
        f"more than max_changed_share={settings.max_changed_share:g}, so nothing was exported "
        "or uploaded. "
        + (f"Gentler verified trials: {listed}." if gentler else "No verified trial was gentler.")
    )
    return message, gentler[0].trial if gentler else None


def phase_judge(prep: Prepared, record: RunRecord, settings: Settings, reporter: Reporter) -> None:
    """The verification's answers read by the judge (opened now unless the search had it),
    and the over-refusal share; the judge's memory is freed before the export."""
    v = record.verification
    if v is None:
        return
    judge = prep.judge or open_judge(settings, str(prep.loaded.device))
    evaluator = verification_evaluator(prep, settings)
    assert evaluator is not None  # a verification exists, so it was not switched off
    try:
        if judge is not None:
            record.judging = judge_verification(
                settings,
                judge,
                evaluator.harmful,
                v.base,
                v.selected,
                [a for a, _ in v.alternatives],
            )
            reporter.info(judge_summary(record.judging))
        record.over_refusal = over_refusal(settings, evaluator.harmless, v.base, v.selected, judge)
    finally:
        if judge is not None:
            judge.close()
            prep.judge = None


def phase_benchmarks(
    prep: Prepared,
    params: AblationParams,
    settings: Settings,
    timings: dict[str, float],
    reporter: Reporter,
) -> JsonDict | None:
    """lm-eval on the base model and on the edit, hooked (before the export removes the hooks)."""
    if not settings.benchmarks:
        return None
    from heretic.engine.benchmarks import compare, plan_tasks

    t = time.monotonic()
    rows = compare(
        prep.loaded,
        plan_tasks(settings.benchmarks),
        lambda: prep.objective.ablator.applied(params),
        limit=settings.benchmark_limit,
        batch_size=settings.benchmark_batch_size,
        seed=settings.seed,
    )
    _timed(timings, "benchmarks", t)
    reporter.info(
        "Benchmarks: "
        + "; ".join(f"{r.task} {r.metric} {r.base:.3g} -> {r.edited:.3g}" for r in rows)
    )
    return benchmark_record(rows, settings, time.monotonic() - t)


def _finish(
    settings: Settings,
    prep: Prepared,
    timings: dict[str, float],
    t_all: float,
    hooks: RunHooks,
    reporter: Reporter,
    *,
    chosen: optuna.trial.FrozenTrial | None = None,
    output: Path | None = None,
) -> RunResult:
    """Select (or take `chosen`), verify, re-choose on the verified figures (gentlest), pass
    the damage gate, export and write the run files into `output`."""
    hooks.on_phase(Phase.SELECT)
    base = prep.base
    assert base is not None
    output = output or settings.output
    trials = completed_trials(prep.study)[: settings.trials]
    found = None if chosen else choose(trials, policy_of(settings))
    selected = chosen or (found.trial if found else None)
    record = _run_record(settings, prep, base, trials, selected, timings, manual=chosen is not None)
    if found is not None:
        record.rule, record.why = found.rule, found.why
    model_dir, blocked = None, None
    if selected is not None:
        hooks.on_phase(Phase.VERIFY)
        verifying = stop_check(
            hooks,
            "the verification",
            "The search is complete: run the same command again; it verifies the chosen "
            "trial again and exports it (no trial is re-run).",
        )
        record.verification = phase_verify(
            prep, trials, selected, settings, reporter, verifying, manual=chosen is not None
        )
        if record.verification is not None and found is not None and settings.selection == GENTLEST:
            selected, verified_why = _rechoose(record.verification, trials, selected, settings)
            record.selected, record.rule = selected, f"{found.rule}, verified"
            record.why = f"{found.why}; then {verified_why}"
        if record.verification is not None:
            reporter.info(record.verification.summary())
        reporter.info(f"Chose trial {selected.number}: {record.why or 'as asked'}.")
        blocked = None if chosen else _gate(record.verification, settings)
        record.gate_message = blocked[0] if blocked else None
        phase_judge(prep, record, settings, reporter)
    if selected is not None and blocked is None:
        params = AblationParams.from_dict(TrialRecord.read(selected).required_parameters())
        hooks.on_phase(Phase.BENCHMARKS)
        record.benchmarks = phase_benchmarks(prep, params, settings, timings, reporter)
        _enter(hooks, Phase.EXPORT)
        t = time.monotonic()
        prep.objective.ablator.remove()
        model_dir = export_model(
            prep.loaded, prep.directions, params, settings, output / "model", reporter
        )
        _timed(timings, "export", t)
    timings.setdefault("export", 0.0)
    timings["total"] = time.monotonic() - t_all
    report = write_run_files(record, output)
    if selected is None:
        raise NoAcceptableTrialError(
            f"No trial met the selection policy ({settings.selection}, damage cap "
            f"{settings.kl_cap}, refusal cap {settings.refusal_cap}, at most "
            f"{settings.max_refusal_share:.0%} of the harmful prompts refused); the report is in "
            f"{output}.",
            "Run more trials (--trials, the study resumes), or relax --kl-cap / the policy; "
            "`heretic export --trial N` exports any trial of the study as it is.",
        )
    if blocked is not None:
        message, gentlest = blocked
        trial = str(gentlest) if gentlest is not None else "N"
        raise NoAcceptableTrialError(
            f"{message} The report and model card are in {output}.",
            f"Export a gentler trial with `heretic export --output {output} --trial {trial}` "
            "(an export you ask for is never gated), run more trials (the study resumes), or "
            "raise max_changed_share to accept the damage.",
        )
    return RunResult(report=report, model_dir=model_dir, timings=timings)


def _run_record(
    settings: Settings,
    prep: Prepared,
    base: RefusalResult,
    trials: list[optuna.trial.FrozenTrial],
    selected: optuna.trial.FrozenTrial | None,
    timings: dict[str, float],
    *,
    manual: bool,
) -> RunRecord:
    """What report.json and the model card are written from."""
    return RunRecord(
        model=prep.loaded.source,
        settings=settings.public_dump(),
        base_refusals=base.count,
        n_harmful=base.total,
        n_harmless=len(prep.prompts.harmless_eval),
        trials=trials,
        requested=settings.trials,
        selected=selected,
        timings=timings,
        base_samples=base.responses[:3],
        sample_prompts=prep.prompts.harmful_eval[:3],
        architecture=prep.arch.model_type,
        num_layers=prep.arch.num_layers,
        chosen_by="manual" if manual else settings.selection,
        stop_reason=_stop_reason(prep, trials, settings),
        layer_profile=_profile_record(prep),
    )


def _stop_reason(prep: Prepared, trials: list[optuna.trial.FrozenTrial], settings: Settings) -> str:
    why = prep.stop_rule.reason(trials) if prep.stop_rule is not None else None
    if why is not None and len(trials) < settings.trials:
        return why
    return f"all {settings.trials} requested trials ran"


def _profile_record(prep: Prepared) -> dict[str, Any] | None:
    if prep.profile is None:
        return None
    ranges = prep.objective.space.ranges()
    return {
        **prep.profile.to_dict(),
        "prior": prep.prior.to_dict() if prep.prior else None,
        "search_ranges": {k: list(v) for k, v in ranges.items()},
    }


def export_trial(
    settings: Settings, number: int, dest: Path, reporter: Reporter | None = None
) -> RunResult:
    """Export trial `number` of an existing study with its report into `dest`, running no
    trial: the same load, directions and verification as a finished run, another choice."""
    reporter = reporter or NullReporter()
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    prep = prepare(settings, reporter, RunHooks(), timings)
    found = {t.number: t for t in completed_trials(prep.study)}
    if number not in found:
        front = ", ".join(str(s.number) for s in pareto_front(list(found.values())))
        raise StudyError(
            f"The study in {settings.resolved_study_dir} has no completed trial {number} "
            f"({len(found)} completed trials; Pareto front: {front or 'none'}).",
            "Pick a completed trial: report.json lists the front and trials.jsonl every trial.",
        )
    return _finish(
        settings, prep, timings, t_all, RunHooks(), reporter, chosen=found[number], output=dest
    )
