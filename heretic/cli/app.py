"""`heretic` console script: registers each command group and runs the app."""

from __future__ import annotations

import typer

from heretic import __version__

app = typer.Typer(
    name="heretic",
    help="Remove refusal behaviour from open-weight chat models by directional ablation, "
    "with the ablation's parameters found automatically by Optuna.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def _register() -> None:
    from heretic.cli import cloud_cmd, lifecycle_cmd, preflight_cmd, run_cmd

    for module in (run_cmd, preflight_cmd, lifecycle_cmd, cloud_cmd):
        module.register(app)


_register()


def main() -> None:
    from heretic.cli.argv_secrets import scrub_argv

    scrub_argv()  # a storage password on the command line: re-exec without it
    app()
