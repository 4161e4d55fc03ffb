"""One unattended run's lifecycle around the engine: the piece `heretic run` wraps itself in.

    with RunLifecycle(settings, reporter) as life:
        if life.already_done:
            return                      # a restart after success: nothing to do, exit 0
        ... engine; between trials: life.stop.check(); life.state.set_trials(...)
        life.finish({"output_dir": ..., ...})   # upload, DONE.json, notify, shutdown

`life.on_phase`, `life.on_trial` and `life.should_stop` fit heretic.run.RunHooks; `life.fail`
records a failure that is returned rather than raised; `life.reporter` also writes the log.

On entry: log file attached, SIGTERM/SIGINT turned into a graceful stop, a done marker makes
the run a no-op, a restart loop (3 failed starts without progress) is refused, and an --upload
without a usable HF_TOKEN fails now rather than after hours of search. On an exception the
failure is recorded in progress.json and notified (the exception is not swallowed).
Guaranteed order in `finish`: upload confirmed -> DONE.json -> notification -> shutdown, so the
machine is only ended once the model is on the Hub and the record is on disk.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from heretic.config.hub_names import check_repo_id, hub_token
from heretic.config.settings import Settings
from heretic.errors import ExitCode, HereticError, StudyError
from heretic.lifecycle.logfile import LoggedReporter, attach_log_file, detach_log_file
from heretic.lifecycle.notification import build_payload, send_notification
from heretic.lifecycle.retry import backoff, keep_trying
from heretic.lifecycle.shutdown import ShutdownResult, end_self, shutdown_self
from heretic.lifecycle.signals import GracefulStop
from heretic.lifecycle.state import BestSoFar, RunState, guard_restart_loop
from heretic.lifecycle.upload import upload_output
from heretic.phases import Phase
from heretic.progress import NullReporter, Reporter

RESTART_LIMIT = 3


def exit_code_of(exc: BaseException) -> int:
    if isinstance(exc, HereticError):
        return int(exc.exit_code)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return int(ExitCode.DISK_FULL)
    if isinstance(exc, KeyboardInterrupt):
        return int(ExitCode.INTERRUPTED)
    return int(ExitCode.INTERNAL)


def message_of(exc: BaseException) -> str:
    if isinstance(exc, HereticError):
        return exc.paragraph()
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted; the study is saved and the next start resumes."
    return f"{type(exc).__name__}: {exc}"


def _clean_exit(exc: BaseException) -> bool:
    """typer.Exit(0) / SystemExit(0) raised to leave early are not failures."""
    code = getattr(exc, "exit_code", getattr(exc, "code", None))
    return (
        isinstance(exc, (SystemExit, RuntimeError))
        and code in (0, None)
        and (isinstance(exc, SystemExit) or hasattr(exc, "exit_code"))
    )


class RunLifecycle:
    """Context manager tying state, log, signals, upload, notification and shutdown together."""

    def __init__(
        self,
        settings: Settings,
        reporter: Reporter | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        restart_limit: int = RESTART_LIMIT,
        sleep: Callable[[float], None] = time.sleep,
        shutdown_tries: int | None = None,
    ) -> None:
        self.settings = settings
        self.environ = os.environ if environ is None else environ
        self.state = RunState(settings.resolved_study_dir)
        self.reporter = LoggedReporter(reporter or NullReporter())
        self.stop = GracefulStop(phase=Phase.START)
        self.restart_limit = restart_limit
        self._sleep = sleep
        # None: a refused self-termination is retried for as long as the process lives.
        self.shutdown_tries = shutdown_tries
        self.already_done = False
        self._handler: logging.Handler | None = None

    # --- entry and exit -------------------------------------------------------------------
    def __enter__(self) -> RunLifecycle:
        self._handler = attach_log_file(self.state.study_dir)
        self.stop.__enter__()
        try:
            self._start()
        except BaseException as exc:
            self._record(exc)
            self._close()
            raise
        return self

    def _start(self) -> None:
        done = self.state.done_info()
        if done is not None:
            self.already_done = True
            where = done.get("upload_url") or done.get("output_dir") or self.state.study_dir
            self.reporter.info(
                f"This run already finished ({done.get('finished_at', '?')}): "
                f"{where}. Nothing to do."
            )
            self._retry_pending_shutdown(done)
            return
        guard_restart_loop(self.state, self.restart_limit)
        repo = self.settings.upload
        if repo:  # fail in seconds, not after the search
            check_repo_id(repo)
            hub_token()  # from os.environ, where the upload reads it
        attempt = self.state.begin_attempt()
        if attempt > 1:
            self.reporter.info(f"Start {attempt} on {self.state.study_dir}: resuming.")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not _clean_exit(exc):
            self._record(exc)
        self._close()

    def _close(self) -> None:
        self.stop.__exit__(None, None, None)
        if self._handler is not None:
            detach_log_file(self._handler)
            self._handler = None

    def _record(self, exc: BaseException) -> None:
        self.fail(exit_code_of(exc), message_of(exc))

    def fail(self, exit_code: int, message: str) -> None:
        """Record a failed outcome and notify; for failures returned rather than raised."""
        logging.getLogger("heretic.run").error("Run failed (exit %d): %s", exit_code, message)
        self.state.record_failure(exit_code, message)
        interrupted = exit_code == ExitCode.INTERRUPTED
        # After the restart guard trips, every restart fails the same way: notify once.
        if interrupted or self.state.failure_streak() <= self.restart_limit:
            self.notify("interrupted" if interrupted else "failed", message, exit_code=exit_code)

    # --- callbacks matching heretic.run.RunHooks ------------------------------------------
    def on_phase(self, phase: Phase) -> None:
        self.stop.phase = phase  # so a signal's message says what it will do now
        self.state.set_phase(phase)

    def on_trial(
        self, completed: int, requested: int, eta_s: float | None, best: BestSoFar | None
    ) -> None:
        # `best` is the trial the selection policy would take now, over the whole study
        # (heretic.run.best_so_far), so restarts and other workers' trials are counted.
        self.state.set_trials(completed, requested, eta_s, best)

    def should_stop(self) -> bool:
        return self.stop.requested

    # --- the end of a successful run ------------------------------------------------------
    def finish(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Upload (if asked), write DONE.json, notify, and end the machine (if asked)."""
        info = {"output_dir": str(self.settings.output), **(info or {})}
        # Absolute, so `heretic status` run from another folder (or the host) can find them.
        for key in ("output_dir", "model_dir"):
            if info.get(key):
                info[key] = str(Path(info[key]).resolve())
        repo = self.settings.upload
        if repo:
            self.stop.check()  # a stop asked for during the export: no upload is started
            self.stop.phase = Phase.UPLOAD
            self.state.set_phase(Phase.UPLOAD, repo)
            info["repo_id"] = repo
            info["upload_url"] = upload_output(
                self.settings.output,
                repo,
                private=not self.settings.public,
                reporter=self.reporter,
                deadline_s=self.settings.upload_deadline_s,
                should_stop=self.should_stop,
            )
        self.state.mark_done(info)
        where = info.get("upload_url") or info["output_dir"]
        self.notify("done", f"finished: {where}", upload_url=info.get("upload_url"))
        if self.settings.shutdown_after:
            info = self._shutdown(info)
        return info

    def _shutdown(self, info: dict[str, Any]) -> dict[str, Any]:
        """End the machine; when the provider refuses, say so once (notification and
        DONE.json) and keep trying with back-off in this process: exiting would only start
        the provider's restart loop (RunPod restarts an exited container at once, for ever),
        and `heretic cloud watch` or the console can still end it from outside."""
        if not info.get("upload_url"):
            self.reporter.warn(
                "--shutdown-after needs a confirmed --upload: without it the "
                "results exist only on this machine, so it is left running."
            )
            return info
        state = {"info": info}

        def refused(tries: int, result: ShutdownResult) -> None:
            state["info"] = self._record_shutdown(state["info"], result)
            self.reporter.warn(
                f"Self-termination refused (try {tries}); trying again in "
                f"{backoff(tries, self.settings.retry_backoff_s):.0f} s rather than exiting "
                "into a restart loop."
            )

        result = keep_trying(
            lambda: self._end_after_refusal(shutdown_self(self.environ, reporter=self.reporter)),
            lambda r: r.ok or r.provider is None or r.not_ours,
            base_s=self.settings.retry_backoff_s,
            sleep=self._sleep,
            on_failure=refused,
            max_tries=self.shutdown_tries,
        )
        return self._record_shutdown(state["info"], result)

    def _record_shutdown(self, info: dict[str, Any], result: ShutdownResult) -> dict[str, Any]:
        notified = bool((info.get("shutdown") or {}).get("notified"))
        if not result.ok and result.provider is not None and not result.not_ours and not notified:
            # The model is safe, but the machine bills on: say so once, not on every try.
            notified = self.notify(
                "shutdown-failed",
                "The run finished, but this machine "
                f"could not end itself and keeps billing: {result.message}",
            )
        info = {
            **info,
            "shutdown": {
                "provider": result.provider,
                "ok": result.ok,
                "message": result.message,
                "notified": notified,
            },
        }
        try:
            self.state.mark_done(info)
        except StudyError as exc:  # the machine may already be going away
            self.reporter.warn(exc.paragraph())
        return info

    def _end_after_refusal(self, refused: ShutdownResult) -> ShutdownResult:
        """A refused self-termination ends in the --on-failure policy: with `stop` (the
        default) the instance is at least stopped, so the GPU stops billing."""
        if refused.ok or refused.provider is None:
            return refused
        if self.settings.on_failure != "stop":
            return refused
        stopped = end_self("stop", self.environ, reporter=self.reporter)
        return ShutdownResult(
            refused.provider,
            stopped.ok,
            f"{refused.message} --on-failure stop: {stopped.message}",
            refused.status,
        )

    def _retry_pending_shutdown(self, done: dict[str, Any]) -> None:
        wanted = self.settings.shutdown_after
        if wanted and done.get("upload_url") and not (done.get("shutdown") or {}).get("ok"):
            self._shutdown(done)

    def notify(self, status: str, message: str, **facts: Any) -> bool:
        url = self.settings.notify
        if not url:
            return False
        payload = build_payload(status, message, study_dir=str(self.state.study_dir), **facts)
        return send_notification(url, payload)
