"""Settings with the profile layer: defaults < profile < --config < HERETIC_* env < CLI flags.

`resolve_settings` merges the layers once without a profile to learn the model and the
profile name, then adds the profile layer (a named profile, or the one `--profile auto`
chooses) under the others. When auto finds nothing that fits, or the model cannot be read,
the settings come back without a profile layer and `choice`/`error` say why; `run_preflight`
then reports the same problem as a FAIL check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from heretic.config.profiles import load_profile
from heretic.config.settings import Settings
from heretic.config.sources import env_layer, merge_layers, toml_layer
from heretic.errors import HereticError
from heretic.preflight.checks_model import cached_count
from heretic.preflight.gpus import GpuInventory, read_inventory
from heretic.preflight.profiles_auto import ProfileChoice, choose_profile


@dataclass(frozen=True)
class Resolved:
    settings: Settings
    choice: ProfileChoice | None  # None: no profile asked for
    error: HereticError | None = None  # the model could not be read for --profile auto


def auto_choice(
    base: Settings, inventory: GpuInventory, environ: Mapping[str, str] | None = None
) -> ProfileChoice:
    """What `--profile auto` picks for `base` (raises HereticError if the model is unreadable)."""
    count = None
    if not base.is_demo:
        count = cached_count(base.model or "", base.revision, base.trust_remote_code)
    return choose_profile(count, inventory, base.is_demo, environ=environ)


def resolve_settings(
    cli: Mapping[str, Any],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    inventory: GpuInventory | None = None,
) -> Resolved:
    """Merge every layer, the profile included. Raises ConfigError for invalid settings."""
    conf = toml_layer(config_path) if config_path else {}
    env = env_layer(environ)
    base = merge_layers(conf, env, cli)
    if base.profile is None:
        return Resolved(base, None)
    if base.profile != "auto":
        profile = load_profile(base.profile)
        settings = merge_layers(profile.settings, conf, env, cli, where=f"profile {profile.name}")
        return Resolved(settings, ProfileChoice(profile.name, "chosen by name"))
    try:
        choice = auto_choice(base, inventory or read_inventory(), environ)
    except HereticError as exc:
        return Resolved(base, None, exc)
    if choice.name is None:
        return Resolved(base, choice)
    profile = load_profile(choice.name)
    settings = merge_layers(profile.settings, conf, env, cli, where=f"profile {profile.name}")
    return Resolved(settings, choice)
