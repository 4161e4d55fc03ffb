"""What `heretic run` does from start to exit, around the engine recipe (`heretic.run.run`):

1. settings from every layer except the profile (cheap: no torch import yet);
2. the study lock (a second run on the same study fails in milliseconds, naming the holder);
3. the profile (`--profile auto` reads the model config and the GPU inventory);
4. the lifecycle: log file, signals, done marker (a finished run is a no-op), restart guard;
5. GPU locks and preflight (a run that cannot finish fails before any weight loads);
6. the engine; then upload, done marker, notification and shutdown.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from heretic.config.settings import Settings
from heretic.config.sources import merge_layers
from heretic.demo.settings import DEMO_LAYER
from heretic.errors import ExitCode, HereticError, NoAcceptableTrialError, PreflightError
from heretic.progress import Reporter, default_reporter
from heretic.run.report_types import RunReport

if TYPE_CHECKING:  # imported where used: `heretic run` starts before torch is imported
    from heretic.lifecycle.on_failure import Policy
    from heretic.lifecycle.retry import Deadline, RetryPlan
    from heretic.lifecycle.session import RunLifecycle
    from heretic.preflight.inventory import GpuInventory
    from heretic.preflight.report import Check


@dataclass
class Outcome:
    exit_code: int
    report: RunReport | None = None
    message: str = ""  # why the run failed (printed as an error)
    notice: str = ""  # something to say on success
    model_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _read_report(output: Path) -> RunReport | None:
    path = output / "report.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _end_stale_first(settings: Settings, reporter: Reporter) -> None:
    """--kill-stale: stale processes may hold the study lock, so they go before we take it."""
    from heretic.preflight.registry import end_processes, find_stale

    stale = find_stale(settings.resolved_study_dir)
    if stale:
        result = end_processes(stale)
        reporter.info(
            f"Ended stale heretic processes: {[s.describe() for s in stale]} "
            f"({len(result.killed)} needed SIGKILL)."
        )


def _validate_inputs(settings: Settings, reporter: Reporter) -> None:
    """Bad input gets its own exit code (missing model 5, bad prompts 4, an unusable study
    storage 16) before preflight and before any weight loads."""
    from heretic.engine.loading import check_model_exists
    from heretic.engine.prompts import load_prompt_sets
    from heretic.preflight.storage import check_storage

    if not settings.is_demo:
        check_model_exists(str(settings.model), settings)
    load_prompt_sets(settings)
    if settings.storage:
        reporter.info(f"Study storage: {check_storage(settings.storage)}.")


def _preflight(settings: Settings, inventory: GpuInventory, reporter: Reporter) -> None:
    from heretic.preflight.checklist import run_preflight

    report = run_preflight(settings, inventory=inventory, for_run=True)
    report.checks.append(_self_termination_check())
    for check in report.checks:
        reporter.info(
            f"preflight {getattr(check.status, 'value', check.status):<4} {check.name}: {check.measured}"
            + (f" (need {check.need})" if check.need else "")
        )
    if report.failed:
        raise PreflightError(
            report.summary(),
            "Fix what the FAIL lines name (or choose another --profile); "
            "`heretic preflight` shows the same checks without starting a run.",
        )


def _self_termination_check() -> Check:
    """The route by which this machine ends itself, tried before the GPU hours start."""
    from heretic.lifecycle.shutdown import check_route
    from heretic.preflight.report import Check, Status

    route = check_route()
    if route is None:
        return Check("self-termination", Status.OK, "not on Vast.ai or RunPod", "-")
    return Check("self-termination", Status(route.status), route.measured, "-", route.detail)


def _check_judge_and_benchmarks(settings: Settings, reporter: Reporter) -> None:
    """Before the search, even with skip_preflight: the judge answers one request (exit 17
    when it cannot), and lm-eval knows every --benchmarks task (exit 3)."""
    from heretic.judging.factory import probe_judge, run_device

    probe = probe_judge(settings, device=run_device(settings))
    if probe is not None:
        reporter.info(probe.line())
    if settings.benchmarks:
        from heretic.engine.benchmarks import check_benchmarks

        plan = check_benchmarks(settings.benchmarks)
        reporter.info(f"Benchmarks after the search: {', '.join(plan.names)}.")


def execute(
    cli: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    assignments: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    reporter: Reporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Run, retrying in this process what a retry may cure (heretic/lifecycle/retry.py), then
    apply --on-failure to the failure that remains (raised or returned): the one place every
    way out of a run passes, settings errors and the restart-loop guard included. Before and
    during the run the --max-hours deadline is watched."""
    from heretic.lifecycle.deadline import deadline_watch

    request = _Request(cli, config_path, assignments, environ)
    reporter = reporter or default_reporter()
    plan, deadline = _retry_plan(request)
    overrides: dict[str, Any] = {}
    retried = 0
    with deadline_watch(deadline, request.policy(), request.env(), reporter):
        while True:
            try:
                outcome, error = _execute(request.with_cli(overrides), reporter), None
                code = outcome.exit_code
            except HereticError as exc:
                outcome, error, code = None, exc, int(exc.exit_code)
            ends_run = error is not None and error.ends_run
            if ends_run or not plan.should_retry(code, retried) or deadline.expired():
                break
            retried += 1
            overrides = plan.overrides(code, overrides)
            wait = plan.delay(retried)
            reporter.warn(
                f"The run failed with exit {code}; retry {retried} of {plan.retries} in "
                f"{wait:.0f} s" + (f" with {overrides}." if overrides else ".")
            )
            sleep(wait)
    if code:
        _after_failure(code, request, reporter, ends_run=ends_run)
    if error is not None:
        raise error
    assert outcome is not None
    return outcome


def _retry_plan(request: _Request) -> tuple[RetryPlan, Deadline]:
    """Retries and deadline from the settings; none when the settings cannot be read (the
    failure that follows is a settings error, which no retry cures)."""
    from heretic.lifecycle.retry import Deadline, RetryPlan

    try:
        probe = merge_layers(*request.upper_layers())
    except (HereticError, ValueError):
        return RetryPlan(0, 0.0), Deadline(None)
    plan = RetryPlan(probe.retries, probe.retry_backoff_s, probe.batch_size, probe.max_batch_size)
    return plan, Deadline.of(probe.max_hours, request.env())


@dataclass(frozen=True)
class _Request:
    """What `heretic run` was given: the settings layers before the profile is chosen."""

    cli: Mapping[str, Any]
    config_path: Path | None
    assignments: list[str] | None
    environ: Mapping[str, str] | None

    def with_cli(self, overrides: Mapping[str, Any]) -> _Request:
        return replace(self, cli={**self.cli, **overrides}) if overrides else self

    def env(self) -> Mapping[str, str]:
        return os.environ if self.environ is None else self.environ

    def policy(self) -> Policy:
        from heretic.lifecycle.on_failure import raw_policy

        try:
            return merge_layers(*self.upper_layers()).on_failure
        except (HereticError, ValueError):
            return raw_policy(self.cli.get("on_failure"), self.env())

    def upper_layers(self) -> list[dict[str, Any]]:
        from heretic.preflight.resolve import upper_layers

        return upper_layers(
            self.cli,
            config_path=self.config_path,
            environ=self.environ,
            assignments=self.assignments,
        )


def _after_failure(
    code: int, request: _Request, reporter: Reporter, *, ends_run: bool = False
) -> None:
    from heretic.lifecycle.on_failure import apply_policy, describe, raw_policy
    from heretic.lifecycle.retry import ends_rental
    from heretic.lifecycle.state import RunState

    if not (ends_run or ends_rental(code)):
        return
    env = os.environ if request.environ is None else request.environ
    try:  # the settings may be what failed: then the flag or variable alone decides
        probe = merge_layers(*request.upper_layers())
        policy, study_dir = probe.on_failure, probe.resolved_study_dir
    except (HereticError, ValueError):
        policy, study_dir = raw_policy(request.cli.get("on_failure"), env), None
    result = apply_policy(policy, code, env, reporter=reporter, terminal=ends_run or None)
    if result is not None and study_dir is not None:
        RunState(study_dir).record_after_failure(describe(policy, result))


def _execute(request: _Request, reporter: Reporter) -> Outcome:
    from heretic.preflight.lock import acquire_run_lock
    from heretic.preflight.registry import register_process
    from heretic.run.output_folder import STUDY_TEMP_TARGETS, output_claimed, remove_temp_files

    upper = request.upper_layers()
    probe = merge_layers(*upper)
    probe = merge_layers(DEMO_LAYER if probe.is_demo else {}, *upper)
    from heretic.secrets import add_secret

    add_secret(probe.notify)  # from a config file too: masked in every line written from now
    if probe.kill_stale and not probe.skip_preflight:
        _end_stale_first(probe, reporter)
    _check_writable(probe)
    # The output first: the study lock creates OUTPUT/study, which must not make a folder of
    # someone else's files look like heretic's.
    with output_claimed(probe.output), acquire_run_lock(probe.resolved_study_dir):
        remove_temp_files(probe.resolved_study_dir, STUDY_TEMP_TARGETS)
        register_process(probe.resolved_study_dir)
        return _locked(request, reporter)


def _check_writable(settings: Settings) -> None:
    """Both folders writable, before the lock and any weight (a read-only --output must not
    cost the whole search); a search-only run writes no output."""
    from heretic.preflight.writable import check_writable

    check_writable(settings.resolved_study_dir, "study folder", "--study-dir (or --output)")
    if not settings.search_only:
        check_writable(settings.output, "output folder", "--output")


def _locked(request: _Request, reporter: Reporter) -> Outcome:
    from heretic.lifecycle.session import RunLifecycle
    from heretic.preflight.inventory import gpus_for_device_map, read_inventory
    from heretic.preflight.lock import acquire_gpu_locks
    from heretic.preflight.resolve import resolve_settings
    from heretic.secrets import add_secret, url_password

    inventory = read_inventory()
    resolved = resolve_settings(
        request.cli,
        config_path=request.config_path,
        environ=request.environ,
        inventory=inventory,
        assignments=request.assignments,
    )
    settings = resolved.settings
    # A storage password from a config file or the environment is masked in every log line,
    # message and file this process writes from here on.
    add_secret(url_password(settings.storage))
    if resolved.choice is not None:
        reporter.info(f"Profile: {resolved.choice.name or 'none'} ({resolved.choice.reason})")
    with RunLifecycle(settings, reporter, environ=request.environ) as life:
        if life.already_done:
            return Outcome(
                int(ExitCode.OK),
                _read_report(settings.output),
                notice="This run had already finished; nothing was redone. To run "
                f"more trials, delete {settings.resolved_study_dir / 'DONE.json'} "
                "and run again: the study resumes.",
            )
        gpus = [g.key for g in gpus_for_device_map(settings.device_map, inventory)]
        with acquire_gpu_locks(gpus):
            _validate_inputs(settings, life.reporter)
            if not settings.skip_preflight:
                _preflight(settings, inventory, life.reporter)
            _check_judge_and_benchmarks(settings, life.reporter)
            return _engine(settings, life)


def _engine(settings: Settings, life: RunLifecycle) -> Outcome:
    from heretic.run.recipe import RunHooks, run

    hooks = RunHooks(
        on_phase=life.on_phase,
        on_trial=life.on_trial,
        should_stop=life.should_stop,
        subscribe_stop=life.stop.subscribe,
    )
    try:
        result = run(settings, life.reporter, hooks)
    except NoAcceptableTrialError as exc:
        life.fail(int(exc.exit_code), exc.paragraph())
        return Outcome(int(exc.exit_code), _read_report(settings.output), message=exc.paragraph())
    if settings.search_only:
        return Outcome(
            int(ExitCode.OK),
            None,
            notice="Search-only run: this machine's trials "
            "are done; the study is finished by a run without search_only.",
        )
    info = life.finish({"model_dir": str(result.model_dir)})
    return Outcome(int(ExitCode.OK), result.report, model_dir=result.model_dir, extra=info)


def export_from_study(
    output: Path,
    trial: int,
    *,
    dest: Path | None = None,
    storage: str | None = None,
    reporter: Reporter | None = None,
) -> Outcome:
    """`heretic export --trial N`: write trial N of a finished study as a model with its own
    report, under the study's run lock, running no trial."""
    from heretic.preflight.lock import acquire_run_lock
    from heretic.run.output_folder import output_claimed
    from heretic.run.recipe import export_trial
    from heretic.run.study_files import settings_of_study

    reporter = reporter or default_reporter()
    settings = settings_of_study(output, storage=storage)
    dest = dest or output / f"trial-{trial}"
    with acquire_run_lock(settings.resolved_study_dir), output_claimed(dest):
        result = export_trial(settings, trial, dest, reporter)
    return Outcome(int(ExitCode.OK), result.report, model_dir=result.model_dir)
