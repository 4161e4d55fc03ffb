"""Builds the resolved Settings for a command from its layers:
defaults < demo defaults (no model) < profile < --config TOML < HERETIC_* env < CLI flags.

`--profile auto` is resolved by preflight from the model estimate and the GPU inventory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from heretic.config.profiles import load_profile
from heretic.config.settings import Settings
from heretic.config.sources import env_layer, merge_layers, set_layer, toml_layer

# The demo model is tiny: a short budget suffices and the search converges in tens of trials.
DEMO_LAYER: dict[str, Any] = {
    "trials": 50,
    "startup_trials": 15,
    "max_response_tokens": 16,
    "device_map": "cpu",
    "dtype": "float32",
    "max_batch_size": 64,
    # Its refusal is written in the early layers, unlike the late-layer habit of large models.
    "max_weight_position": {"low": 0.0, "high": 1.0},
    "min_weight_distance": {"low": 0.2, "high": 1.0},
}


def resolve_settings(
    cli: dict[str, Any],
    *,
    config: Path | None = None,
    assignments: list[str] | None = None,
    environ: dict[str, str] | None = None,
    profile_resolver: Any = None,
) -> tuple[Settings, str | None]:
    """(settings, why the profile was chosen or None)."""
    cli = {k: v for k, v in cli.items() if v is not None}
    upper = [
        toml_layer(config) if config else {},
        env_layer(environ),
        set_layer(assignments or []),
        cli,
    ]
    probe = merge_layers(*upper)
    demo = DEMO_LAYER if probe.is_demo else {}
    profile_layer: dict[str, Any] = {}
    reason = None
    if probe.profile == "auto":
        if profile_resolver is None:
            from heretic.preflight.profiles_auto import resolve_auto_profile as profile_resolver
        name, reason = profile_resolver(probe)
        profile_layer = dict(load_profile(name).settings) if name else {}
    elif probe.profile:
        profile_layer = dict(load_profile(probe.profile).settings)
    settings = merge_layers(demo, profile_layer, *upper, where="the resolved configuration")
    return settings, reason
