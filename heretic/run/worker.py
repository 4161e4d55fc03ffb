"""Entry point of a worker process started by `heretic run --workers N` (not a user command):

    python -m heretic.run.worker STUDY_DIR/worker-settings.json INDEX

It loads its own model replica, reads the parent's saved directions, and runs trials of the
shared study until the study holds the requested number. SIGTERM ends it after its current trial.
"""

from __future__ import annotations

import sys
from pathlib import Path

from heretic.errors import ExitCode, HereticError
from heretic.progress import LineReporter


def main(argv: list[str]) -> int:
    from heretic.engine.study import completed_trials, run_trials
    from heretic.lifecycle.signals import GracefulStop
    from heretic.run.recipe import RunHooks, prepare
    from heretic.run.worker_pool import settings_file

    path, index = Path(argv[0]), int(argv[1])
    settings = settings_file(path)
    reporter = LineReporter(every_s=30.0)
    with GracefulStop() as stop:
        prep = prepare(settings, reporter, RunHooks(), {}, worker_index=index)
        try:
            rule = prep.stop_rule
            ran = run_trials(
                prep.study,
                settings.resolved_study_dir,
                settings.trials,
                prep.objective,
                should_stop=lambda: stop.requested,
                done_early=lambda: (
                    rule.reason(completed_trials(prep.study)) if rule is not None else None
                ),
            )
        except HereticError as exc:
            reporter.warn(f"worker {index}: {exc.paragraph()}")
            return int(exc.exit_code)
    reporter.info(f"worker {index}: ran {ran} trial(s).")
    return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
