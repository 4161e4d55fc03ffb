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
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    pass


def _register() -> None:
    from heretic.cli import cloud_cmd, image_cmd, lifecycle_cmd, preflight_cmd, run_cmd

    for module in (run_cmd, preflight_cmd, lifecycle_cmd, cloud_cmd, image_cmd):
        module.register(app)


_register()


def main() -> None:
    from heretic.cli.argv_secrets import scrub_argv

    scrub_argv()  # a storage password on the command line: re-exec without it
    try:
        app()
    except SystemExit as exc:
        # A command line typer refused (exit 2) fails the same way on every provider restart:
        # under a provider it is a terminal failure like any other (--on-failure).
        if exc.code == 2:
            _usage_failure()
        raise


def _usage_failure() -> None:
    import os
    import sys

    from heretic.lifecycle.on_failure import apply_policy, policy_from_argv
    from heretic.progress import LineReporter

    policy = policy_from_argv(sys.argv[1:], os.environ)
    apply_policy(policy, 2, os.environ, reporter=LineReporter(stream=sys.stderr))
