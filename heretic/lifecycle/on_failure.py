"""What happens to the rented machine when a run fails for good: `--on-failure keep|stop|destroy`.

Vast.ai never restarts an exited container (its contract, GPU included, bills on until it is
stopped or destroyed) and RunPod restarts one for ever. So every failure ends the rental once
the in-container retries (heretic/lifecycle/retry.py) are spent, on every provider:
- stop (default): the instance stops; its volume, with the study, progress.json and the log,
  is kept (RunPod bills only the disk, Vast the disk), so the cause can be read and the run
  resumed after a fix;
- destroy: the instance and its disk are deleted (nothing bills; the study is gone unless it
  lives on a network volume or a database);
- keep: nothing happens (for debugging in the machine; the SkyPilot recipe sets it).
Never: a held lock (exit 8, another run owns the study) and an interruption (exit 75).
An upload that ran out its deadline (upload_deadline_s) ends the rental at once, without
retries: a retry would only wait as long again.
Only acts inside a Vast.ai or RunPod container that heretic launched (HERETIC_LAUNCHED_BY);
elsewhere it does nothing and says nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import httpx

from heretic.errors import ExitCode
from heretic.lifecycle.retry import ends_rental
from heretic.lifecycle.shutdown import ShutdownResult, end_self, provider_of
from heretic.progress import NullReporter, Reporter

Policy = Literal["keep", "stop", "destroy"]
POLICIES: tuple[str, ...] = get_args(Policy)
DEFAULT_POLICY: Policy = "stop"
ENV_NAME = "HERETIC_ON_FAILURE"

TERMINAL = frozenset(
    {
        ExitCode.USAGE,
        ExitCode.CONFIG,
        ExitCode.PROMPTS,
        ExitCode.MODEL_NOT_FOUND,
        ExitCode.UNSUPPORTED_ARCHITECTURE,
        ExitCode.PREFLIGHT,
        ExitCode.NO_ACCEPTABLE_TRIAL,
        ExitCode.TOKEN,
        ExitCode.STUDY,
    }
)


def is_terminal(exit_code: int) -> bool:
    """A failure no retry can cure (ends the rental at once, without in-container retries)."""
    return exit_code in TERMINAL


def raw_policy(cli_value: str | None, environ: Mapping[str, str]) -> Policy:
    """The policy when the settings themselves could not be read (they may be what failed):
    the flag, else HERETIC_ON_FAILURE, else the default. An unknown word means the default."""
    for value in (cli_value, environ.get(ENV_NAME)):
        word = (value or "").strip().lower()
        if word in POLICIES:
            return word  # type: ignore[return-value]
    return DEFAULT_POLICY


def policy_from_argv(argv: list[str], environ: Mapping[str, str]) -> Policy:
    """`--on-failure X` / `--on-failure=X` from a command line typer refused to parse."""
    value = None
    for i, arg in enumerate(argv):
        if arg == "--on-failure" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--on-failure="):
            value = arg.partition("=")[2]
    return raw_policy(value, environ)


def apply_policy(
    policy: Policy,
    exit_code: int,
    environ: Mapping[str, str] | None = None,
    *,
    reporter: Reporter | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] | None = None,
    terminal: bool | None = None,
) -> ShutdownResult | None:
    """After a failure with `exit_code` whose retries are spent: stop, destroy or keep this
    instance. None when nothing applies (a lock, an interruption, or not on a provider).
    `terminal` overrides what the exit code says (an upload past its deadline ends the run).
    Never raises."""
    environ = os.environ if environ is None else environ
    reporter = reporter or NullReporter()
    provider = provider_of(environ)
    ends = ends_rental(int(exit_code)) if terminal is None else terminal
    if provider is None or not ends:
        return None
    if policy == "keep":
        result = ShutdownResult(
            provider,
            True,
            "--on-failure keep: the instance keeps running and billing until you stop it.",
        )
        reporter.warn(result.message)
        return result
    kind = "failed for good" if is_terminal(int(exit_code)) else "failed after its retries"
    reporter.warn(f"The run {kind} (exit {int(exit_code)}); --on-failure {policy}.")
    kwargs: dict[str, Any] = {"reporter": reporter, "transport": transport}
    if sleep is not None:
        kwargs["sleep"] = sleep
    return end_self(policy, environ, **kwargs)


def describe(policy: Policy, result: ShutdownResult) -> dict[str, Any]:
    """What progress.json records about it (for `heretic status`)."""
    return {
        "policy": policy,
        "provider": result.provider,
        "ok": result.ok,
        "message": result.message,
    }
