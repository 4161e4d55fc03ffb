"""Layered configuration: defaults < profile < --config TOML < HERETIC_* environment < CLI flags.

Each layer is a plain dict of settings keys; `merge_layers` validates the result into one
`Settings`. Strings from the environment and `--set KEY=VALUE` are parsed the same way.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from heretic.config.settings import Range, Settings
from heretic.errors import ConfigError
from heretic.jsontypes import JsonDict

ENV_PREFIX = "HERETIC_"
# heretic's own HERETIC_* variables that are not settings: the settings loader skips them, and
# tests/test_config.py holds this list equal to every such name the code and scripts read.
NON_SETTING_ENV = frozenset(
    {
        "HERETIC_CACHE",  # where the demo model and other caches live (demo/model.py)
        "HERETIC_CUDA_LINE",  # set by the image: the CUDA line it was built for
        "HERETIC_DEBUG",  # tracebacks on errors (cli/errors.py)
        "HERETIC_DEFAULT_IMAGE",  # the image tag the launch scripts use (scripts/lib/image.sh)
        "HERETIC_JUDGE_API_KEY",  # the judge endpoint's key: a secret, not a setting
        "HERETIC_HOST_ID",  # how this machine names itself in a shared study (engine/study.py)
        "HERETIC_RUNPOD_API_URL",  # another RunPod API base (tests, proxies)
        "HERETIC_VAST_API_URL",  # another Vast.ai API base (tests, proxies)
        "HERETIC_WORKER_INDEX",  # set by a run for its worker processes (run/worker_pool.py)
        # Set by heretic's launchers on the instances they create (heretic/lifecycle/retry.py):
        # only then does heretic stop or destroy the machine it runs on.
        "HERETIC_LAUNCHED_BY",
        "HERETIC_LAUNCHED_AT",
        # The test harness's own switches (.ci/run, tests/conftest.py):
        "HERETIC_REQUIRE_POSTGRES",  # the PostgreSQL tests must run, not skip
        "HERETIC_SKIP_IMAGE_TEST",  # .ci/run skips building and running the image
        "HERETIC_TEST_CACHE",  # a demo model cache the test session reuses
    }
)


def _list_field(name: str) -> bool:
    ann = str(Settings.model_fields[name].annotation)
    return ann.startswith("list")


def parse_value(key: str, raw: str) -> object:
    """Turn a string (environment or --set) into the value the settings field expects."""
    if key not in Settings.model_fields:
        raise ConfigError(f"Unknown setting '{key}'.", _known_keys_hint())
    annotation = Settings.model_fields[key].annotation
    text = raw.strip()
    if annotation in (Range, Range | None):
        if text.lower() in ("", "auto"):
            return None  # the search space's prior decides
        if text.startswith("{"):
            return json.loads(text)
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2:
            raise ConfigError(
                f"Setting '{key}' expects a range 'LOW,HIGH', got '{raw}'.",
                "Write it as two numbers separated by a comma, for example 0.8,1.5.",
            )
        return {"low": float(parts[0]), "high": float(parts[1])}
    if _list_field(key):
        if text.startswith("["):
            return json.loads(text)
        return [p.strip() for p in text.split(",") if p.strip()]
    if text == "" and "None" in str(annotation):
        return None
    return text


def _known_keys_hint() -> str:
    return "Known settings: " + ", ".join(sorted(Settings.model_fields)) + "."


def env_layer(environ: Mapping[str, str] | None = None) -> JsonDict:
    environ = os.environ if environ is None else environ
    layer: JsonDict = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in NON_SETTING_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in Settings.model_fields:
            raise ConfigError(
                f"Environment variable {name} does not name a setting.",
                f"Unset it or fix its name. {_known_keys_hint()}",
            )
        layer[key] = parse_value(key, raw)
    return layer


def toml_layer(path: Path) -> JsonDict:
    """A --config file: settings keys at the top level (a [settings] table is also accepted)."""
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.", "Check the --config path.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Config file {path} is not valid TOML: {exc}.", "Fix the file.") from exc
    table: JsonDict = data.get("settings", data)
    _check_keys(table, f"config file {path}")
    return table


def split_assignments(assignments: list[str]) -> dict[str, str]:
    """Repeated --set KEY=VALUE flags as raw strings (keys with '_' for '-'), unparsed: the
    launcher passes them on to the container's environment as they are."""
    raw: dict[str, str] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--set expects KEY=VALUE, got '{item}'.", "Example: --set kl_cap=0.3"
            )
        raw[key.strip().replace("-", "_")] = value
    return raw


def set_layer(assignments: list[str]) -> JsonDict:
    """Repeated --set KEY=VALUE flags, parsed as their settings' types."""
    return {key: parse_value(key, value) for key, value in split_assignments(assignments).items()}


def _check_keys(data: Mapping[str, object], where: str) -> None:
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"Unknown setting(s) {', '.join(unknown)} in {where}.", _known_keys_hint()
        )


def merge_layers(*layers: Mapping[str, object], where: str = "the configuration") -> Settings:
    """Later layers win. Raises ConfigError naming every invalid field."""
    merged: dict[str, object] = {}
    for layer in layers:
        merged.update({k: v for k, v in layer.items()})
    _check_keys(merged, where)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"Invalid settings in {where}: {problems}.",
            "Fix the value(s) named; `heretic run --help` describes every option.",
        ) from exc
