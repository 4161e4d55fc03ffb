"""The run's log file (study/heretic.log): every progress line, with secrets redacted.

`attach_log_file(study_dir)` adds a handler to the "heretic" logger; `LoggedReporter` wraps the
terminal reporter so what the user sees also lands in the file (progress at most every 30 s).
Guaranteed: lines pass through `redact` before they are written; the file rotates at 20 MB
(two old files kept), so a restart loop cannot fill the disk with logs.
"""

from __future__ import annotations

import errno
import io
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import RotatingFileHandler
from pathlib import Path

from heretic.lifecycle.state import LOG_FILE
from heretic.progress import Advance, Reporter
from heretic.secrets import redact
from heretic.statefiles import append_text

LOGGER_NAME = "heretic"


class RedactingFilter(logging.Filter):
    """Replaces secret values in the formatted message before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class _NoFollowHandler(RotatingFileHandler):
    """A rotating log whose file is opened without following a link (heretic.statefiles):
    a link planted as heretic.log is refused instead of appended to."""

    def _open(self) -> io.TextIOWrapper:
        fd = append_text(Path(self.baseFilename))
        return open(fd, "a", encoding=self.encoding, errors=self.errors, closefd=True)

    def handleError(self, record: logging.LogRecord) -> None:
        # A full disk: the line is lost from the file (the terminal still shows it) and the
        # run stops cleanly on its own (exit 15); no traceback per line on stderr.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return
        super().handleError(record)


def attach_log_file(study_dir: Path, level: int = logging.INFO) -> logging.Handler:
    """Send the "heretic" logger's records to STUDY/heretic.log; returns the handler (detach
    it with `logging.getLogger("heretic").removeHandler(h); h.close()`)."""
    study_dir = Path(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    handler = _NoFollowHandler(
        study_dir / LOG_FILE, maxBytes=20 * 2**20, backupCount=2, encoding="utf-8"
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")
    )
    handler.addFilter(RedactingFilter())
    handler.setLevel(level)
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger(LOGGER_NAME).removeHandler(handler)
    handler.close()


class LoggedReporter:
    """A Reporter that forwards to `inner` and also logs each line to the "heretic" logger."""

    def __init__(self, inner: Reporter, every_s: float = 30.0) -> None:
        self.inner = inner
        self.every_s = every_s
        self.log = logging.getLogger(f"{LOGGER_NAME}.run")

    def info(self, message: str) -> None:
        self.inner.info(message)
        self.log.info(message)

    def warn(self, message: str) -> None:
        self.inner.warn(message)
        self.log.warning(message)

    @contextmanager
    def task(self, name: str, total: int) -> Iterator[Advance]:
        done, last = 0, time.monotonic()
        with self.inner.task(name, total) as inner_advance:

            def advance(n: int = 1) -> None:
                nonlocal done, last
                inner_advance(n)
                done += n
                now = time.monotonic()
                if now - last >= self.every_s or done >= total:
                    last = now
                    self.log.info("%s: %d/%d", name, done, total)

            yield advance
