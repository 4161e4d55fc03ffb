"""Placeholder: commands are added here by their feature."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
