"""Settings with every layer: defaults < demo defaults (no model) < profile < --config <
HERETIC_* env < --set < CLI flags.

`resolve_settings` merges the layers once without a profile to learn the model and the
profile name, then adds the profile layer (a named profile, or the one `--profile auto`
chooses) under the others. When auto finds nothing that fits, or the model cannot be read,
the settings come back without a profile layer and `choice`/`error` say why; `run_preflight`
then reports the same problem as a FAIL check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from heretic.config.profiles import load_profile
from heretic.config.settings import Settings
from heretic.config.sources import env_layer, merge_layers, set_layer, toml_layer
from heretic.demo.settings import DEMO_LAYER
from heretic.errors import HereticError
from heretic.jsontypes import JsonDict
from heretic.preflight.inventory import GpuInventory, read_inventory
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
    from heretic.preflight.checks_model import cached_count

    count = None
    if not base.is_demo:
        count = cached_count(base.model or "", base.revision, base.trust_remote_code)
    return choose_profile(count, inventory, base.is_demo, environ=environ)


def upper_layers(
    cli: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    assignments: list[str] | None = None,
) -> list[JsonDict]:
    """The layers above the profile, lowest first. Raises ConfigError for bad input."""
    conf = toml_layer(config_path) if config_path else {}
    given = {k: v for k, v in cli.items() if v is not None}
    return [conf, env_layer(environ), set_layer(assignments or []), given]


def resolve_settings(
    cli: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    inventory: GpuInventory | None = None,
    assignments: list[str] | None = None,
) -> Resolved:
    """Merge every layer, the profile included, then settle `dtype = "auto"` for a CPU-only
    run (see `heretic.preflight.cpu_dtype`). Raises ConfigError for invalid settings."""
    resolved = _merge_all(
        cli, config_path=config_path, environ=environ, inventory=inventory, assignments=assignments
    )
    return replace(resolved, settings=cpu_dtype_settings(resolved.settings, inventory))


def cpu_dtype_settings(settings: Settings, inventory: GpuInventory | None) -> Settings:
    """`dtype = "auto"` on a CPU-only run becomes the dtype this CPU runs fastest (bf16 only
    where it is not slower, or where only bf16 fits the RAM)."""
    from heretic.preflight.cpu_dtype import choose_cpu_dtype, on_cpu_only

    if settings.dtype != "auto" or settings.quantization != "none":
        return settings
    if not on_cpu_only(settings.device_map, len((inventory or read_inventory()).gpus)):
        return settings
    return settings.model_copy(update={"dtype": choose_cpu_dtype(_fits_float32(settings)).dtype})


def _fits_float32(settings: Settings) -> bool:
    import psutil

    from heretic.preflight.checks_model import cached_count
    from heretic.preflight.memory import weight_bytes

    if settings.is_demo:
        return True
    try:
        count = cached_count(settings.model or "", settings.revision, settings.trust_remote_code)
    except HereticError:
        return True  # the model check reports it; the dtype does not matter then
    return weight_bytes(count, "none", "float32") < 0.8 * psutil.virtual_memory().available


def _merge_all(
    cli: Mapping[str, object],
    *,
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    inventory: GpuInventory | None = None,
    assignments: list[str] | None = None,
) -> Resolved:
    """Merge every layer, the profile included. Raises ConfigError for invalid settings."""
    upper = upper_layers(cli, config_path=config_path, environ=environ, assignments=assignments)
    base = merge_layers(*upper)
    demo = DEMO_LAYER if base.is_demo else {}
    base = merge_layers(demo, *upper)
    if base.profile is None:
        return Resolved(base, None)
    if base.profile != "auto":
        profile = load_profile(base.profile)
        settings = merge_layers(demo, profile.settings, *upper, where=f"profile {profile.name}")
        return Resolved(settings, ProfileChoice(profile.name, "chosen by name"))
    try:
        choice = auto_choice(base, inventory or read_inventory(), environ)
    except HereticError as exc:
        return Resolved(base, None, exc)
    if choice.name is None:
        return Resolved(base, choice)
    profile = load_profile(choice.name)
    settings = merge_layers(demo, profile.settings, *upper, where=f"profile {profile.name}")
    return Resolved(settings, choice)
