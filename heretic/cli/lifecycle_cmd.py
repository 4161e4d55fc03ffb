"""`heretic status` and `heretic upload`: read a run's state, upload a finished output later."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from heretic.cli.errors import command
from heretic.cli.options import JsonOpt

DirArg = Annotated[
    Path | None,
    typer.Argument(
        help="Output folder of a run, or its study folder "
        "(default: $HERETIC_OUTPUT, else heretic-output).",
        show_default=False,
    ),
]


def _default_output() -> Path:
    from heretic.config.settings import Settings

    return Path(os.environ.get("HERETIC_OUTPUT") or Settings.model_fields["output"].default)


def status(
    folder: DirArg = None,
    as_json: JsonOpt = False,
    lines: Annotated[int, typer.Option(min=0, help="Log lines to show.")] = 5,
    clear_failures: Annotated[
        bool,
        typer.Option(
            "--clear-failures",
            help="Forget earlier failed starts so a stopped restart loop may "
            "run again (the study is kept).",
        ),
    ] = False,
) -> None:
    """Show where a run is: phase, trials k of n, ETA, best so far, failures, upload URL."""
    from heretic.lifecycle.status import locate, render, summary

    state = locate(folder if folder is not None else _default_output())
    if clear_failures:
        state.clear_failures()
    data = summary(state, lines)
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else render(data))


def upload(
    folder: Annotated[Path, typer.Argument(help="Output folder of a finished run.")],
    repo_id: Annotated[str, typer.Argument(help="Hub repository, NAMESPACE/NAME.")],
    public: Annotated[
        bool, typer.Option("--public", help="Create the repository public (default private).")
    ] = False,
    retries: Annotated[int, typer.Option(min=0, help="Retries of transient failures.")] = 5,
    deadline: Annotated[
        float | None,
        typer.Option(
            "--deadline",
            min=1,
            help="Seconds the whole upload may take before it is abandoned (exit 10; "
            "default: the upload_deadline_s setting's default, 4 hours).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Upload a finished output folder to the Hub (token from HF_TOKEN), then verify it.
    SIGTERM or Ctrl-C stops it with exit 75; the local output is never touched."""
    from heretic.lifecycle.upload import DEFAULT_DEADLINE_S, upload_finished_run
    from heretic.progress import default_reporter

    typer.echo(
        upload_finished_run(
            folder,
            repo_id,
            private=not public,
            retries=retries,
            reporter=default_reporter(),
            deadline_s=deadline if deadline is not None else DEFAULT_DEADLINE_S,
        )
    )


def register(app: typer.Typer) -> None:
    command(app, "status")(status)
    command(app, "upload")(upload)
