"""`heretic run` and `heretic demo`: parse options, resolve settings, hand over to the runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from heretic.cli.errors import command, exit_with
from heretic.cli.options import (
    ConfigOpt,
    JsonOpt,
    ModelOpt,
    OutputOpt,
    ProfileOpt,
    SetOpt,
    StorageOpt,
)
from heretic.cli.options import setting_option as _opt


def run_command(
    model: ModelOpt = None,
    harmful_prompts: Annotated[str | None, _opt("harmful_prompts", "--harmful-prompts")] = None,
    harmless_prompts: Annotated[str | None, _opt("harmless_prompts", "--harmless-prompts")] = None,
    harmful_eval_prompts: Annotated[
        str | None, _opt("harmful_eval_prompts", "--harmful-eval-prompts")
    ] = None,
    harmless_eval_prompts: Annotated[
        str | None, _opt("harmless_eval_prompts", "--harmless-eval-prompts")
    ] = None,
    trials: Annotated[int | None, _opt("trials", "--trials", "-n")] = None,
    seed: Annotated[int | None, _opt("seed", "--seed")] = None,
    output: OutputOpt = None,
    study_dir: Annotated[Path | None, _opt("study_dir", "--study-dir")] = None,
    profile: ProfileOpt = None,
    device_map: Annotated[str | None, _opt("device_map", "--device-map")] = None,
    quantization: Annotated[str | None, _opt("quantization", "--quantization")] = None,
    dtype: Annotated[str | None, _opt("dtype", "--dtype")] = None,
    batch_size: Annotated[int | None, _opt("batch_size", "--batch-size")] = None,
    max_response_tokens: Annotated[
        int | None, _opt("max_response_tokens", "--max-response-tokens")
    ] = None,
    n_directions: Annotated[int | None, _opt("n_directions", "--n-directions")] = None,
    ablation: Annotated[str | None, _opt("ablation", "--ablation")] = None,
    selection: Annotated[str | None, _opt("selection", "--selection")] = None,
    kl_cap: Annotated[float | None, _opt("kl_cap", "--kl-cap")] = None,
    patience: Annotated[int | None, _opt("patience", "--patience")] = None,
    trust_remote_code: Annotated[
        bool | None, _opt("trust_remote_code", "--trust-remote-code")
    ] = None,
    judge: Annotated[str | None, _opt("judge", "--judge")] = None,
    judge_model: Annotated[str | None, _opt("judge_model", "--judge-model")] = None,
    judge_in_search: Annotated[bool | None, _opt("judge_in_search", "--judge-in-search")] = None,
    benchmarks: Annotated[str | None, _opt("benchmarks", "--benchmarks")] = None,
    benchmark_limit: Annotated[float | None, _opt("benchmark_limit", "--benchmark-limit")] = None,
    storage: StorageOpt = None,
    study_name: Annotated[str | None, _opt("study_name", "--study-name")] = None,
    workers: Annotated[int | None, _opt("workers", "--workers")] = None,
    upload: Annotated[str | None, _opt("upload", "--upload")] = None,
    public: Annotated[bool | None, _opt("public", "--public")] = None,
    shutdown_after: Annotated[bool | None, _opt("shutdown_after", "--shutdown-after")] = None,
    notify: Annotated[str | None, _opt("notify", "--notify")] = None,
    on_failure: Annotated[str | None, _opt("on_failure", "--on-failure")] = None,
    retries: Annotated[int | None, _opt("retries", "--retries")] = None,
    max_hours: Annotated[float | None, _opt("max_hours", "--max-hours")] = None,
    skip_preflight: Annotated[bool | None, _opt("skip_preflight", "--skip-preflight")] = None,
    kill_stale: Annotated[bool | None, _opt("kill_stale", "--kill-stale")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Abliterate a model (the built-in demo model when none is given): preflight, directions,
    Optuna search, unattended selection, export, report, and optional upload."""
    cli = {k: v for k, v in locals().items() if k not in ("config", "set_", "as_json")}
    _execute(cli, config, set_, as_json)


def demo_command(
    output: OutputOpt = None,
    trials: Annotated[int | None, _opt("trials", "--trials", "-n")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the built-in demo model end to end (trained on the CPU once, then cached)."""
    _execute({"model": None, "output": output, "trials": trials}, None, None, as_json)


def _execute(
    cli: dict[str, Any], config: Path | None, assignments: list[str] | None, as_json: bool
) -> None:
    from heretic.cli.run_output import print_summary
    from heretic.run.execution import execute

    outcome = execute(cli, config_path=config, assignments=assignments)
    print_summary(outcome, as_json=as_json)
    exit_with(outcome.exit_code)


def export_command(
    trial: Annotated[
        int,
        typer.Option(
            "--trial",
            "-t",
            help="Number of the completed trial to export (report.json lists the Pareto front).",
        ),
    ],
    output: Annotated[
        Path,
        typer.Option("--output", "-o", help="Output folder of the finished run (holds study/)."),
    ] = Path("heretic-output"),
    to: Annotated[
        Path | None,
        typer.Option(
            "--to",
            help="Where to write the model and its report (default OUTPUT/trial-N).",
            show_default=False,
        ),
    ] = None,
    storage: StorageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Export one trial of a finished study (a gentler or stronger edit than the selected one)
    as a model with its own verified report, without running the search again."""
    from heretic.cli.run_output import print_summary
    from heretic.run.execution import export_from_study

    outcome = export_from_study(output, trial, dest=to, storage=storage)
    print_summary(outcome, as_json=as_json)
    exit_with(outcome.exit_code)


def register(app: typer.Typer) -> None:
    command(app, "run")(run_command)
    command(app, "demo")(demo_command)
    command(app, "export")(export_command)
