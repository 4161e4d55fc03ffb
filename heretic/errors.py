"""Typed errors. Library code raises these with their facts; the CLI maps each class to one
message paragraph and one exit code (see `ExitCode`). Nothing here prints."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    CONFIG = 3
    PROMPTS = 4
    MODEL_NOT_FOUND = 5
    UNSUPPORTED_ARCHITECTURE = 6
    PREFLIGHT = 7
    LOCKED = 8
    NO_ACCEPTABLE_TRIAL = 9
    UPLOAD = 10
    TOKEN = 11
    CLOUD = 12
    OUT_OF_MEMORY = 13
    STUDY = 14
    DISK_FULL = 15
    STORAGE = 16
    JUDGE = 17
    INTERRUPTED = 75  # EX_TEMPFAIL: "try again", which is exactly what a resume does


class HereticError(Exception):
    """Base class: `message` says what was wrong, `hint` what to do about it."""

    exit_code: ExitCode = ExitCode.INTERNAL
    # True: --on-failure applies although the exit code is one a restart may cure (a restart
    # would only repeat the same wait, billing the GPU).
    ends_run: bool = False

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def paragraph(self) -> str:
        return f"{self.message} {self.hint}".strip()


class ConfigError(HereticError):
    exit_code = ExitCode.CONFIG


class PromptSourceError(HereticError):
    exit_code = ExitCode.PROMPTS


class ModelNotFoundError(HereticError):
    exit_code = ExitCode.MODEL_NOT_FOUND


class UnsupportedArchitectureError(HereticError):
    exit_code = ExitCode.UNSUPPORTED_ARCHITECTURE


class PreflightError(HereticError):
    exit_code = ExitCode.PREFLIGHT


class LockedError(HereticError):
    exit_code = ExitCode.LOCKED


class NoAcceptableTrialError(HereticError):
    exit_code = ExitCode.NO_ACCEPTABLE_TRIAL


class UploadError(HereticError):
    exit_code = ExitCode.UPLOAD


class UploadRefusedError(UploadError):
    """The Hub refused the upload for good (a bad token, no write access, offline mode, a
    request it rejects): exit 10, and no retry of the run can change the answer, so the run
    ends (--on-failure applies) instead of paying for in-container retries."""

    ends_run = True


class UploadDeadlineError(UploadError):
    """The upload did not finish within upload_deadline_s (a Hub that accepts and never
    answers): exit 10 like any upload failure, but the run ends (--on-failure applies)."""

    ends_run = True


class TokenError(HereticError):
    exit_code = ExitCode.TOKEN


class CloudError(HereticError):
    exit_code = ExitCode.CLOUD


class OutOfMemoryError(HereticError):
    exit_code = ExitCode.OUT_OF_MEMORY


class StudyError(HereticError):
    exit_code = ExitCode.STUDY


class DiskFullError(HereticError):
    exit_code = ExitCode.DISK_FULL


class StorageError(HereticError):
    """The shared study storage (--storage URL) cannot be used: driver, server or login."""

    exit_code = ExitCode.STORAGE


class JudgeError(HereticError):
    """The refusal judge (--judge) cannot be used: a model that does not load, an endpoint that
    does not answer, or answers that are not a verdict."""

    exit_code = ExitCode.JUDGE


class InterruptedRun(HereticError):
    exit_code = ExitCode.INTERRUPTED
