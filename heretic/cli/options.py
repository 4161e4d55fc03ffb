"""Options shared by several commands, declared once so their names and help agree."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from heretic.config.settings import field_help

SETTING_HELP = field_help()


def setting_option(key: str, *names: str, **kw: Any) -> Any:
    """A command-line option for the setting `key`, with the setting's own help text."""
    return typer.Option(*names, help=SETTING_HELP[key], show_default=False, **kw)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of the human-readable output.")
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML file with settings.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Any setting as KEY=VALUE (repeatable), e.g. --set kl_cap=0.3."),
]
ModelOpt = Annotated[str | None, setting_option("model", "--model", "-m")]
# A string, not a Path: Path("") is ".", which would hide an empty --output "$UNSET".
OutputOpt = Annotated[str | None, setting_option("output", "--output", "-o")]
ProfileOpt = Annotated[str | None, setting_option("profile", "--profile")]
StorageOpt = Annotated[str | None, setting_option("storage", "--storage")]
