"""Upload a finished output folder to the Hugging Face Hub, retrying, then verify it is there.

Layout uploaded: output/model/* to the repo root (weights, config, tokenizer, chat template,
README.md model card) and output/report.json, trials.jsonl, pareto.png under heretic/.
Guaranteed: the token comes from the `token` argument or HF_TOKEN only; it is never written,
logged or put in an error message, and a file that contains it is refused before any upload.
The repo is created private unless asked otherwise (an existing repo keeps its visibility; a
public one is reported). Transient failures (connection, 408/425/429/5xx) are retried with
exponential back-off, permanent ones (other 4xx) fail at once. Success means every planned file
is listed in the repo with its local size. The local output is never touched.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from heretic.errors import ConfigError, TokenError, UploadError
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
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_TOKEN = re.compile(r"^[\x21-\x7e]{8,}$")


@dataclass(frozen=True)
class PlannedFile:
    local: Path
    path_in_repo: str


class _Transient(Exception):
    """A failure worth retrying; carries a redacted description."""


def resolve_token(token: str | None = None) -> str:
    """The Hub token: `token`, else HF_TOKEN. Raises TokenError when missing or malformed."""
    value = token if token is not None else os.environ.get("HF_TOKEN")
    if value is None or not value.strip():
        raise TokenError(
            "No Hugging Face token: HF_TOKEN is not set.",
            "Create a token with write access at https://huggingface.co/settings/tokens and "
            "pass it as the HF_TOKEN environment variable (heretic never stores it).",
        )
    value = value.strip()
    if not _TOKEN.match(value):
        raise TokenError(
            "HF_TOKEN is malformed (too short, or it contains spaces or non-ASCII characters).",
            "Copy the token again from https://huggingface.co/settings/tokens (it looks like "
            "hf_...).",
        )
    return value


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or "--" in repo_id:
        raise ConfigError(
            f"'{repo_id}' is not a Hub repository id.",
            "Write it as NAMESPACE/NAME, e.g. your-user/Qwen3-4B-heretic (letters, digits, "
            "'-', '_', '.').",
        )
    return repo_id


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
        return UploadError(f"Upload impossible: {detail}", "Unset HF_HUB_OFFLINE and retry.")
    if not isinstance(exc, HfHubHTTPError):
        if isinstance(exc, (httpx2.TransportError, ConnectionError, TimeoutError)):
            return _Transient(detail)
        return UploadError(
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
    return UploadError(f"The Hub refused the upload (HTTP {status}): {detail}", hint)


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
) -> str:
    """Upload `output_dir` to `repo_id`; returns the repo URL. Raises TokenError, ConfigError
    (bad repo id), UploadError (not an output folder, permanent refusal, retries spent)."""
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
        f"repository {repo_id}."
    )
    for attempt in range(retries + 1):
        try:
            url = _attempt(api, repo_id, private, plan, reporter)
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
        else:
            reporter.info(f"Uploaded and verified: {url}")
            return url
    raise AssertionError("unreachable")  # the loop returns or raises


def upload_finished_run(
    output_dir: Path,
    repo_id: str,
    *,
    private: bool = True,
    retries: int = 5,
    reporter: Reporter | None = None,
) -> str:
    """`heretic upload`: upload a finished output folder, then record the upload in its study's
    done marker, so `heretic status` and a restart know the model is on the Hub."""
    from heretic.lifecycle.state import RunState

    url = upload_output(output_dir, repo_id, private=private, retries=retries, reporter=reporter)
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
