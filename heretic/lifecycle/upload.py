"""Upload a finished output folder to the Hugging Face Hub, retrying, then verify it is there.

Layout uploaded: output/model/* to the repo root (weights, config, tokenizer, chat template,
README.md model card) and output/report.json, trials.jsonl, pareto.png under heretic/.
Guaranteed: the token comes from the `token` argument or HF_TOKEN only; it is never written,
logged or put in an error message, and a file that contains it is refused before any upload.
The repo is created private unless asked otherwise (an existing repo keeps its visibility; a
public one is reported). Transient failures (connection, 408/425/429/5xx) are retried with
exponential back-off, permanent ones (other 4xx) fail at once. Success means every planned file
is listed in the repo with its local size. The local output is never touched.
Deadlines: every request has a connect and a read timeout, and the whole upload (every attempt
and back-off) one overall deadline, `deadline_s` (the `upload_deadline_s` setting); past it the
upload is abandoned with UploadDeadlineError (exit 10). A stop request (SIGTERM/SIGINT) while
it runs abandons it with InterruptedRun (exit 75); either way the next upload starts afresh and
verifies what is on the Hub.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heretic.config.hub_names import check_repo_id, hub_token
from heretic.config.settings import Settings
from heretic.errors import InterruptedRun, UploadDeadlineError, UploadError, UploadRefusedError
from heretic.hub_client import DeadlineExceeded, Stopped, Timeouts, hub_timeouts, run_with_deadline
from heretic.progress import NullReporter, Reporter
from heretic.secrets import redact

if TYPE_CHECKING:
    from huggingface_hub import HfApi

EXTRAS = ("report.json", "trials.jsonl", "pareto.png")
EXTRAS_FOLDER = "heretic"
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# Files checked for a leaked token before upload; weights are binary and too big to scan.
SCANNED_SUFFIXES = frozenset(
    {
        ".json",
        ".jsonl",
        ".md",
        ".txt",
        ".jinja",
        ".py",
        ".yaml",
        ".yml",
        ".toml",
        ".csv",
        ".model",
        ".tiktoken",
    }
)
DEFAULT_DEADLINE_S = float(Settings.model_fields["upload_deadline_s"].default)


@dataclass(frozen=True)
class PlannedFile:
    local: Path
    path_in_repo: str


class _Transient(Exception):
    """A failure worth retrying; carries a redacted description."""


def resolve_token(token: str | None = None) -> str:
    """The Hub token: `token`, else HF_TOKEN, by the one rule `heretic run` checks too
    (heretic.config.hub_names). Raises TokenError when missing or malformed."""
    return hub_token(token)


def plan_files(output_dir: Path) -> list[PlannedFile]:
    """What goes where. Raises UploadError when output_dir is not a finished output folder."""
    model_dir = Path(output_dir) / "model"
    if not model_dir.is_dir() or not any(model_dir.glob("*.safetensors")):
        raise UploadError(
            f"{output_dir} holds no exported model ({model_dir} has no .safetensors files).",
            "Point to the output folder of a finished `heretic run` (the one with model/ and "
            "report.json inside).",
        )
    plan = [
        PlannedFile(p, p.relative_to(model_dir).as_posix())
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and not _hidden(p, model_dir)
    ]
    if not any(f.path_in_repo == "README.md" for f in plan):
        card = Path(output_dir) / "README.md"
        if card.is_file():
            plan.append(PlannedFile(card, "README.md"))
    for name in EXTRAS:
        extra = Path(output_dir) / name
        if extra.is_file():
            plan.append(PlannedFile(extra, f"{EXTRAS_FOLDER}/{name}"))
    return plan


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def refuse_token_leaks(plan: list[PlannedFile], token: str) -> None:
    needle = token.encode()
    for item in plan:
        if item.local.suffix.lower() not in SCANNED_SUFFIXES:
            continue
        if needle in item.local.read_bytes():
            raise UploadError(
                f"{item.local} contains your Hugging Face token; nothing was uploaded.",
                "Remove the token from that file (and revoke the token, it may have leaked), "
                "then run `heretic upload` again.",
            )


def _classify(exc: Exception, token: str) -> Exception:
    """Turn a Hub failure into _Transient (retry) or UploadError (stop), redacted."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    text = redact(f"{type(exc).__name__}: {exc}", (token,)).splitlines()
    detail = " ".join(line.strip() for line in text if line.strip())[:400]
    if isinstance(exc, OfflineModeIsEnabled):
        return UploadRefusedError(f"Upload impossible: {detail}", "Unset HF_HUB_OFFLINE and retry.")
    if not isinstance(exc, HfHubHTTPError):
        if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return _Transient(detail)
        return UploadRefusedError(
            f"Upload failed: {detail}",
            "Fix the cause named above, then run `heretic upload OUTPUT REPO_ID`.",
        )
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None or status in TRANSIENT_STATUSES:
        return _Transient(detail)
    if status in (401, 403):
        hint = (
            "The token was refused: make sure HF_TOKEN is a token with WRITE access to "
            "that namespace, then run `heretic upload OUTPUT REPO_ID`."
        )
    else:
        hint = "Fix what the Hub reports above, then run `heretic upload OUTPUT REPO_ID`."
    return UploadRefusedError(f"The Hub refused the upload (HTTP {status}): {detail}", hint)


def _attempt(
    api: HfApi, repo_id: str, private: bool, plan: list[PlannedFile], reporter: Reporter
) -> str:
    from huggingface_hub import CommitOperationAdd

    url = str(api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"))
    operations = [
        CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=str(f.local)) for f in plan
    ]
    api.create_commit(
        repo_id=repo_id,
        operations=operations,
        repo_type="model",
        commit_message="Upload abliterated model (heretic)",
    )
    _verify(api, repo_id, plan)
    info = api.model_info(repo_id)
    if private and getattr(info, "private", None) is False:
        reporter.warn(
            f"{repo_id} already existed and is PUBLIC; heretic does not change the "
            "visibility of an existing repository."
        )
    return url


def _verify(api: HfApi, repo_id: str, plan: list[PlannedFile]) -> None:
    remote = {
        item.path: getattr(item, "size", None)
        for item in api.list_repo_tree(repo_id, recursive=True, repo_type="model")
    }
    wrong = [
        f.path_in_repo for f in plan if remote.get(f.path_in_repo, -1) != f.local.stat().st_size
    ]
    if wrong:
        raise _Transient(
            f"after the commit, {len(wrong)} file(s) are missing or differ on the "
            f"Hub: {', '.join(wrong[:5])}"
        )


def upload_output(
    output_dir: Path,
    repo_id: str,
    *,
    private: bool = True,
    token: str | None = None,
    retries: int = 5,
    reporter: Reporter | None = None,
    backoff_s: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    deadline_s: float = DEFAULT_DEADLINE_S,
    timeouts: Timeouts | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """Upload `output_dir` to `repo_id`; returns the repo URL. Raises TokenError, ConfigError
    (bad repo id), UploadError (not an output folder, permanent refusal, retries spent),
    UploadDeadlineError (not done within `deadline_s`), InterruptedRun (`should_stop`)."""
    reporter = reporter or NullReporter()
    token = resolve_token(token)
    check_repo_id(repo_id)
    plan = plan_files(Path(output_dir))
    refuse_token_leaks(plan, token)
    from huggingface_hub import HfApi

    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    total = sum(f.local.stat().st_size for f in plan)
    visibility = "private" if private else "public"
    reporter.info(
        f"Uploading {len(plan)} files ({total / 2**30:.2f} GiB) to {visibility} "
        f"repository {repo_id} (deadline {deadline_s:.0f} s)."
    )

    def attempts() -> str:
        return _with_retries(
            api, repo_id, private, plan, reporter, token, retries, backoff_s, sleep
        )

    with hub_timeouts(timeouts):
        try:
            url = run_with_deadline(attempts, deadline_s, should_stop=should_stop)
        except DeadlineExceeded:
            raise UploadDeadlineError(
                f"The upload to {repo_id} did not finish within its deadline of "
                f"{deadline_s:.0f} s (upload_deadline_s) and was abandoned; the Hub may hold "
                "part of it.",
                "The local output is intact: run `heretic upload OUTPUT REPO_ID` when the Hub "
                "answers again (it verifies what is there), or raise upload_deadline_s for a "
                "slow link.",
            ) from None
        except Stopped:
            raise InterruptedRun(
                f"The upload to {repo_id} was stopped on request before it was confirmed.",
                "The local output is intact: run `heretic upload OUTPUT REPO_ID` (or the same "
                "`heretic run` command) again to upload it.",
            ) from None
    reporter.info(f"Uploaded and verified: {url}")
    return url


def _with_retries(
    api: HfApi,
    repo_id: str,
    private: bool,
    plan: list[PlannedFile],
    reporter: Reporter,
    token: str,
    retries: int,
    backoff_s: float,
    sleep: Callable[[float], None],
) -> str:
    """Attempts with exponential back-off between transient failures; the URL or UploadError."""
    for attempt in range(retries + 1):
        try:
            return _attempt(api, repo_id, private, plan, reporter)
        except Exception as exc:  # every Hub/transport failure is classified below
            failure = exc if isinstance(exc, _Transient) else _classify(exc, token)
            if isinstance(failure, UploadError):
                raise failure from None
            if attempt == retries:
                raise UploadError(
                    f"Upload to {repo_id} failed {retries + 1} times; last error: {failure}.",
                    "The local output is intact: run `heretic upload OUTPUT REPO_ID` later.",
                ) from None
            delay = min(backoff_s * 2**attempt, 300.0)
            reporter.warn(
                f"Upload attempt {attempt + 1} failed ({failure}); retrying in {delay:.0f} s."
            )
            sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def upload_finished_run(
    output_dir: Path,
    repo_id: str,
    *,
    private: bool = True,
    retries: int = 5,
    reporter: Reporter | None = None,
    deadline_s: float = DEFAULT_DEADLINE_S,
) -> str:
    """`heretic upload`: upload a finished output folder, then record the upload in its study's
    done marker, so `heretic status` and a restart know the model is on the Hub. SIGTERM or
    SIGINT while it runs ends it with InterruptedRun (exit 75), the local output intact."""
    from heretic.lifecycle.signals import GracefulStop
    from heretic.lifecycle.state import RunState
    from heretic.phases import Phase

    with GracefulStop(phase=Phase.UPLOAD) as stop:
        url = upload_output(
            output_dir,
            repo_id,
            private=private,
            retries=retries,
            reporter=reporter,
            deadline_s=deadline_s,
            should_stop=lambda: stop.requested,
        )
    study = output_dir / "study"
    if study.is_dir():
        state = RunState(study)
        state.mark_done(
            {
                **(state.done_info() or {"output_dir": str(output_dir)}),
                "repo_id": repo_id,
                "upload_url": url,
            }
        )
    return url
