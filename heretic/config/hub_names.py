"""What the Hugging Face Hub accepts as a repository id and as a token: the one rule for
`heretic run --upload`, `heretic upload`, preflight and the settings, checked before any weight
loads so a name the Hub will refuse never costs a night's search.

Repository ids: huggingface_hub's own validator (letters, digits, '-', '_', '.'; no '--' or
'..'; at most 96 characters; not ending in '.git'), plus what an upload needs on top: a
namespace (NAMESPACE/NAME) and ASCII only (Python's `\\w` would let 'mé' through).
Tokens: `hf_` and at least 30 letters or digits, from HF_TOKEN. Nothing here prints a token.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from heretic.errors import ConfigError, TokenError

TOKEN_ENV = "HF_TOKEN"
TOKEN_FORM = re.compile(r"^hf_[A-Za-z0-9]{30,}$")
_TOKEN_HELP = "https://huggingface.co/settings/tokens"


def repo_id_problem(repo_id: str) -> str | None:
    """Why the Hub would refuse `repo_id` as the name of a model repository, or None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils._validators import validate_repo_id

    if not repo_id.isascii():
        return "it contains non-ASCII characters"
    if repo_id.count("/") != 1:
        return "it is not NAMESPACE/NAME"
    if repo_id.lower().endswith(".git"):
        return "it ends in '.git'"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        return str(exc).split(":")[0].rstrip(".").lower()
    return None


def check_repo_id(repo_id: str) -> str:
    """`repo_id`, or ConfigError (exit 3) saying why the Hub would refuse it."""
    problem = repo_id_problem(repo_id or "")
    if problem is not None:
        raise ConfigError(
            f"'{repo_id}' is not a Hub repository id: {problem}.",
            "Write it as NAMESPACE/NAME, e.g. your-user/Qwen3-4B-heretic (ASCII letters, "
            "digits, '-', '_', '.'; no '--' or '..', no '.git' at the end, at most 96 "
            "characters).",
        )
    return repo_id


def token_problem(value: str | None) -> str | None:
    """Why `value` is not a usable Hub token ("missing", "malformed"), or None."""
    if value is None or not value.strip():
        return "missing"
    if not TOKEN_FORM.match(value.strip()):
        return "malformed"
    return None


def hub_token(token: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The Hub token: `token`, else HF_TOKEN. TokenError (exit 11) when missing or malformed."""
    environ = os.environ if environ is None else environ
    value = token if token is not None else environ.get(TOKEN_ENV)
    problem = token_problem(value)
    if problem == "missing":
        raise TokenError(
            "No Hugging Face token: HF_TOKEN is not set.",
            f"Create a token with write access at {_TOKEN_HELP} and pass it as the HF_TOKEN "
            "environment variable (heretic never stores it).",
        )
    if problem is not None or value is None:
        raise TokenError(
            "HF_TOKEN is malformed: a Hugging Face token is hf_ followed by at least 30 "
            "letters or digits (this one is too short, or holds spaces, quotes or other "
            "characters).",
            f"Copy the token again from {_TOKEN_HELP}, without quotes or spaces.",
        )
    return value.strip()
