"""The unattended wrapper around the engine recipe: what `heretic run` does from start to exit.

(lifecycle integration: lock, done marker, preflight, signals, progress file, upload, shutdown
and notification are added around `heretic.run.run`.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heretic.config.settings import Settings
from heretic.errors import ExitCode, NoAcceptableTrialError
from heretic.progress import Reporter, default_reporter
from heretic.run import run


@dataclass
class Outcome:
    exit_code: int
    report: dict[str, Any] | None = None
    message: str = ""
    model_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def execute(settings: Settings, *, profile_reason: str | None = None,
            reporter: Reporter | None = None) -> Outcome:
    reporter = reporter or default_reporter()
    if profile_reason:
        reporter.info(f"Profile: {settings.profile} ({profile_reason})")
    try:
        result = run(settings, reporter)
    except NoAcceptableTrialError as exc:
        import json

        report = json.loads((settings.output / "report.json").read_text())
        return Outcome(int(exc.exit_code), report, exc.paragraph())
    return Outcome(int(ExitCode.OK), result.report, "", result.model_dir)
