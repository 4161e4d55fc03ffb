"""Hardware profiles: TOML files that preset settings for a kind of machine.

Format::

    [profile]
    description = "one line shown by `heretic profiles`"

    [settings]
    device_map = "auto"        # any Settings key

Profiles live in `profiles/` at the repository root; wheels carry them as `heretic/profiles`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from heretic.config.settings import Settings
from heretic.errors import ConfigError
from heretic.jsontypes import JsonDict


def profiles_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "profiles"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "profiles"


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    settings: JsonDict = field(default_factory=dict)
    path: Path | None = None


def load_profile_file(path: Path) -> Profile:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Profile {path} is not valid TOML: {exc}.", "Fix the file or choose another profile."
        ) from exc
    meta = data.get("profile", {})
    settings = data.get("settings", {})
    extra = sorted(set(data) - {"profile", "settings"})
    if extra or not isinstance(meta, dict) or not isinstance(settings, dict):
        raise ConfigError(
            f"Profile {path} is malformed: expected only [profile] and [settings] tables"
            + (f", found {', '.join(extra)}." if extra else "."),
            "See profiles/README.md for the format.",
        )
    unknown = sorted(set(settings) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"Profile {path} sets unknown setting(s): {', '.join(unknown)}.",
            "Remove or rename them; `heretic run --help` lists every setting.",
        )
    try:
        Settings.model_validate(settings)
    except ValidationError as exc:
        raise ConfigError(
            f"Profile {path} has invalid values: {exc.errors()[0]['msg']}.", "Fix the value named."
        ) from exc
    return Profile(
        name=path.stem,
        description=str(meta.get("description", "")),
        settings=settings,
        path=path,
    )


def list_profiles(directory: Path | None = None) -> list[Profile]:
    directory = directory or profiles_dir()
    return [load_profile_file(p) for p in sorted(directory.glob("*.toml"))]


def load_profile(name: str, directory: Path | None = None) -> Profile:
    directory = directory or profiles_dir()
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.is_file():
        return load_profile_file(candidate)
    path = directory / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(directory.glob("*.toml"))) or "none"
        raise ConfigError(
            f"Unknown profile '{name}'.", f"Known profiles: {known}; or use --profile auto."
        )
    return load_profile_file(path)
