"""`heretic version` (what is installed; the image's build check) and `heretic health` (the
image's HEALTHCHECK). Both are cheap and print one short block."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from heretic.cli.errors import command
from heretic.errors import ExitCode

# Docker's HEALTHCHECK contract: 0 healthy, 1 unhealthy (2 is reserved).
UNHEALTHY = 1


def version(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Import everything a run needs and, in the image, check torch's CUDA "
            "build against the image's CUDA line; exit 7 if anything is wrong.",
        ),
    ] = False,
) -> None:
    """Print heretic's version, torch's CUDA build and the versions of the main libraries."""
    from heretic.install_check import check_install, render

    report = check_install(os.environ)
    typer.echo(render(report))
    if check and not report.ok:
        typer.echo(
            f"error: this installation cannot run heretic: {'; '.join(report.problems)}."
            " Rebuild the image (or reinstall) with the CUDA line's torch build.",
            err=True,
        )
        raise typer.Exit(int(ExitCode.PREFLIGHT))


def health(
    folder: Annotated[
        Path | None,
        typer.Argument(
            help="Output or study folder (default: $HERETIC_STUDY_DIR, else $HERETIC_OUTPUT/study, "
            "else heretic-output/study).",
            show_default=False,
        ),
    ] = None,
    min_age: Annotated[
        float,
        typer.Option(
            "--min-age",
            min=60,
            help="Seconds without a completed trial before the search counts "
            "as hung (at least; 3 average trials if longer).",
        ),
    ] = 1800,
) -> None:
    """Exit 0 when the run is healthy, 1 when its search stopped moving (HEALTHCHECK)."""
    from heretic.lifecycle.health import check_health

    result = check_health(_study_dir(folder), min_age_s=min_age)
    typer.echo(("healthy: " if result.ok else "unhealthy: ") + result.message)
    if not result.ok:
        raise typer.Exit(UNHEALTHY)


def _study_dir(folder: Path | None) -> Path:
    if folder is not None:
        return folder / "study" if (folder / "study").is_dir() else folder
    if os.environ.get("HERETIC_STUDY_DIR"):
        return Path(os.environ["HERETIC_STUDY_DIR"])
    return Path(os.environ.get("HERETIC_OUTPUT") or "heretic-output") / "study"


def register(app: typer.Typer) -> None:
    command(app, "version")(version)
    command(app, "health")(health)
