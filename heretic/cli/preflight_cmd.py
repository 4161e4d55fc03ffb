"""`heretic preflight` (checks that a run can start and finish) and `heretic profiles`.

The report table goes to stdout (or JSON with --json); the exit code is 0 when no check
FAILs and ExitCode.PREFLIGHT otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from heretic.cli.errors import command, exit_with
from heretic.cli.options import ConfigOpt, JsonOpt, ProfileOpt, SetOpt
from heretic.errors import ExitCode

if TYPE_CHECKING:
    from heretic.preflight.report import PreflightReport

ModelOpt = Annotated[
    str | None, typer.Option("--model", help="Hub id or local path; empty checks the demo model.")
]
GpusOpt = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        help="Plan for another machine: COUNTxGB of fresh cards (1x24, 1x80, 4x24, "
        "2x48, 1x141) instead of this machine's GPUs; RAM stays this machine's.",
    ),
]


def render_table(report: PreflightReport, file: TextIO | None = None) -> None:
    """The checks as a rich table, then one line per WARN/FAIL saying what to change."""
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file or sys.stdout, soft_wrap=False)
    colours = {"OK": "green", "WARN": "yellow", "FAIL": "red bold"}
    table = Table(title="heretic preflight", show_lines=False)
    for column in ("Check", "Status", "Measured", "Need"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        status = check.status.value
        table.add_row(check.name, f"[{colours[status]}]{status}[/]", check.measured, check.need)
    console.print(table)
    if report.profile is not None and report.profile.name:
        console.print(f"Profile: {report.profile.name} ({report.profile.reason})", markup=False)
    for check in report.checks:
        if check.status.value != "OK" and check.detail:
            console.print(f"{check.status.value} {check.name}: {check.detail}", markup=False)
    verdict = "FAILED: fix the FAIL lines above" if report.failed else "all checks passed"
    console.print(f"Preflight {verdict}.", markup=False)


def _preflight(
    model: str | None,
    profile: str | None,
    config: Path | None,
    sets: list[str],
    kill_stale: bool,
    as_json: bool,
    planned_gpus: str | None = None,
) -> int:
    from heretic.config.sources import set_layer
    from heretic.preflight.checklist import run_preflight
    from heretic.preflight.inventory import read_inventory
    from heretic.preflight.resolve import resolve_settings

    cli: dict[str, Any] = set_layer(sets)
    cli.update({k: v for k, v in (("model", model), ("profile", profile)) if v is not None})
    if kill_stale:
        cli["kill_stale"] = True
    inventory = read_inventory()
    if planned_gpus:
        from heretic.preflight.fit import planned_inventory

        inventory = planned_inventory(planned_gpus, inventory)
    resolved = resolve_settings(cli, config_path=config, inventory=inventory)
    report = run_preflight(resolved.settings, inventory=inventory, for_run=False)
    if as_json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        render_table(report)
    return int(ExitCode.PREFLIGHT) if report.failed else 0


def _profiles(as_json: bool) -> int:
    from heretic.config.profiles import list_profiles

    profiles = list_profiles()
    if as_json:
        rows = [
            {"name": p.name, "description": p.description, "settings": p.settings} for p in profiles
        ]
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max((len(p.name) for p in profiles), default=0)
    for p in profiles:
        sys.stdout.write(f"{p.name.ljust(width)}  {p.description}\n")
    return 0


def register(app: typer.Typer) -> None:
    @command(app, "preflight")
    def preflight(
        model: ModelOpt = None,
        profile: ProfileOpt = None,
        config: ConfigOpt = None,
        sets: SetOpt = None,
        kill_stale: Annotated[
            bool,
            typer.Option(
                "--kill-stale",
                help="End stale heretic processes of yours that hold this study "
                "or its GPUs (SIGTERM, then SIGKILL).",
            ),
        ] = False,
        as_json: JsonOpt = False,
        gpus: GpusOpt = None,
    ) -> None:
        """Check GPUs, memory, disk, locks and stale processes before a run; FAIL exits 7."""
        exit_with(_preflight(model, profile, config, sets or [], kill_stale, as_json, gpus))

    @command(app, "profiles")
    def profiles(as_json: JsonOpt = False) -> None:
        """List the hardware profiles, one line each."""
        exit_with(_profiles(as_json))
