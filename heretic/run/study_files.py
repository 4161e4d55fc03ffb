"""Files in the study folder that make a resume safe: the settings the study was started with
(a resume with different search-defining settings is refused, not silently mixed) and the
refusal directions (computed once, shared by resumed runs and by every worker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from heretic.atomic import write_atomic, write_with
from heretic.config.settings import Settings
from heretic.engine.directions import Directions
from heretic.engine.layer_profile import LayerPrior, LayerProfile
from heretic.errors import StudyError

# Settings that change what a trial measures: a study is only resumable if they are unchanged.
STUDY_KEYS = (
    "model",
    "revision",
    "harmful_prompts",
    "harmless_prompts",
    "harmful_eval_prompts",
    "harmless_eval_prompts",
    "system_prompt",
    "thinking",
    "project_directions",
    "n_directions",
    "ablation",
    "components",
    "max_weight",
    "max_weight_position",
    "min_weight_fraction",
    "min_weight_distance",
    "direction_index",
    "direction_scopes",
    "refusal_markers",
    "max_response_tokens",
    "strip_thinking",
    "quantization",
    "study_name",
    "kl_target",
    "damage_metric",
    "damage_tokens",
    # The split decides which evaluation prompts the trials are scored on.
    "verify_split",
    "verify_harmful_prompts",
    "verify_harmless_prompts",
)
# What a study recorded before a key existed ran with: heretic 0.1 scored trials on the whole
# evaluation sets (verify_split=0) and scored the sampler on the raw KL (kl_target=0); before
# issue 18 the damage was the first-token KL (damage_tokens was not read).
BEFORE_KEY_EXISTED: dict[str, Any] = {
    "verify_split": 0.0,
    "kl_target": 0.0,
    "damage_metric": "first_token",
    "damage_tokens": 32,
}


def unreadable(path: Path, exc: Exception) -> StudyError:
    """The one message for a study file that does not parse (exit 14, naming the file)."""
    return StudyError(
        f"The study file {path} cannot be read ({type(exc).__name__}: {exc}); it is damaged or "
        "was not written by heretic.",
        f"Restore it from a copy, delete it if heretic can recreate it ({path.name} is "
        "recreated when missing, except settings.json of a study with trials), or start a fresh "
        "study with another --study-dir.",
    )


def read_study_json(path: Path) -> dict[str, Any]:
    """The JSON object in a study file; StudyError naming the file when it does not parse."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise unreadable(path, exc) from exc
    if not isinstance(data, dict):
        raise unreadable(path, ValueError("not a JSON object"))
    return data


def study_identity(settings: Settings) -> dict[str, Any]:
    dumped = settings.model_dump(mode="json")
    return {key: dumped[key] for key in STUDY_KEYS}


def _require_same(
    recorded: dict[str, Any] | None, identity: dict[str, Any], where: str, hint: str
) -> None:
    changed = sorted(
        k for k in identity if (recorded or {}).get(k, BEFORE_KEY_EXISTED.get(k)) != identity[k]
    )
    if recorded is not None and changed:
        raise StudyError(
            f"{where} was started with different settings ({', '.join(changed)}); going on "
            "would mix incomparable trials.",
            hint,
        )


def check_or_record_settings(study_dir: Path, settings: Settings) -> None:
    path = study_dir / "settings.json"
    identity = study_identity(settings)
    if path.is_file():
        recorded = read_study_json(path).get("identity", {})
        _require_same(
            recorded,
            identity,
            f"The study in {study_dir}",
            "Use the original settings, or a new --output / --study-dir.",
        )
    payload = {"identity": identity, "resolved": settings.public_dump()}
    write_atomic(path, json.dumps(payload, indent=2) + "\n")


def settings_of_study(output: Path, *, storage: str | None = None) -> Settings:
    """The settings a study in OUTPUT/study ran with, as saved at its start, for work on the
    finished study (exporting another trial). Secrets were masked when they were saved: a
    masked storage URL must be given again; a webhook or upload target is not reused."""
    path = output / "study" / "settings.json"
    if not path.is_file():
        raise StudyError(
            f"{output} holds no study ({path} is missing).",
            "Give the output folder of a heretic run (the folder with report.json and study/).",
        )
    resolved = dict(read_study_json(path).get("resolved") or {})
    resolved.update(
        output=str(output),
        study_dir=None,
        notify=None,
        upload=None,
        shutdown_after=False,
        workers=1,
        search_only=False,
    )
    if storage is not None:
        resolved["storage"] = storage
    elif "****" in (resolved.get("storage") or ""):
        raise StudyError(
            "The study lives in a database whose password was masked when the settings were "
            "saved, so it cannot be read back from the study folder.",
            "Give the storage URL again with --storage.",
        )
    return Settings.model_validate(resolved)


def check_or_record_in_study(study: optuna.Study, settings: Settings) -> None:
    """The same check inside the study itself, so machines sharing one --storage study cannot
    mix trials of different settings either."""
    identity = study_identity(settings)
    recorded = study.user_attrs.get("heretic_identity")
    _require_same(
        recorded,
        identity,
        f"The study '{settings.study_name}' in its storage",
        "Use the study's settings, or another --study-name.",
    )
    if recorded is None:
        study.set_user_attr("heretic_identity", identity)


def save_directions(path: Path, directions: Directions) -> None:
    tensors = {
        "basis": directions.basis.contiguous(),
        "harmful_mean": directions.harmful_mean.contiguous(),
        "harmless_mean": directions.harmless_mean.contiguous(),
    }
    # A fresh temp file (O_EXCL), never a fixed name a planted link could sit on.
    write_with(path, lambda tmp: save_file(tensors, str(tmp)))


def load_directions(path: Path) -> Directions | None:
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        return Directions(
            basis=tensors["basis"].to(torch.float32),
            harmful_mean=tensors["harmful_mean"],
            harmless_mean=tensors["harmless_mean"],
        )
    except (SafetensorError, KeyError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise  # a read error of the disk, not a damaged file
        raise unreadable(path, exc) from exc


PROFILE_FILE = "layer_profile.json"
PRIOR_KEY = "heretic_layer_prior"


def save_layer_profile(study_dir: Path, profile: LayerProfile) -> None:
    write_atomic(study_dir / PROFILE_FILE, json.dumps(profile.to_dict(), indent=2) + "\n")


def load_layer_profile(study_dir: Path) -> LayerProfile | None:
    path = study_dir / PROFILE_FILE
    if not path.is_file():
        return None
    try:
        return LayerProfile.from_dict(read_study_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise unreadable(path, exc) from exc


def study_prior(study: optuna.Study, derived: LayerPrior | None) -> LayerPrior | None:
    """The search-space prior recorded in the study (the first run or machine records it), so
    every resume and every machine searches the same space even if its residuals differ in the
    last float bits."""
    recorded = study.user_attrs.get(PRIOR_KEY)
    if recorded is not None:
        return LayerPrior.from_dict(recorded)
    if derived is not None:
        study.set_user_attr(PRIOR_KEY, derived.to_dict())
    return derived
