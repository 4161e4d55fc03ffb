"""Folds the selected ablation into the weights at full precision and saves a standard model
folder (sharded safetensors, config, tokenizer, chat template) that
`AutoModelForCausalLM.from_pretrained` loads with no heretic code.

When the search ran on unquantized weights that all sit on real devices, the fold happens in
place on the loaded model (no second copy). When the search ran quantized or with offloaded
weights, the model is loaded again at full precision on the CPU and folded there.
The folder is written under a temporary name and renamed into place, so a crash never leaves a
half-written export.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError

from heretic.config.settings import Settings
from heretic.engine.ablation import Ablator
from heretic.engine.architecture import describe
from heretic.engine.directions import Directions
from heretic.engine.loading import LoadedModel
from heretic.engine.parameters import AblationParams
from heretic.errors import ConfigError, DiskFullError
from heretic.jsontypes import JsonDict
from heretic.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def fold(
    model: PreTrainedModel, directions: Directions, params: AblationParams, settings: Settings
) -> None:
    arch = describe(model, list(settings.components))
    Ablator(arch, directions, settings.ablation).fold(params)


def _can_fold_in_place(loaded: LoadedModel) -> bool:
    if loaded.quantized:
        return False
    return all(p.device.type != "meta" for p in loaded.model.parameters())


def _full_precision_copy(loaded: LoadedModel, settings: Settings) -> PreTrainedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(loaded.path, trust_remote_code=settings.trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        loaded.path,
        revision=settings.revision,
        trust_remote_code=settings.trust_remote_code,
        dtype=dtype if dtype != "auto" else torch.bfloat16,
        device_map="cpu",
    )
    model.eval()  # type: ignore[no-untyped-call]  # PreTrainedModel.eval is unannotated
    return model


MARKER = "heretic_export.json"


def existing_export(target: Path, params: AblationParams) -> bool:
    """True when `target` already holds a complete export of exactly these parameters."""
    marker = target / MARKER
    if not marker.is_file():
        return False
    recorded: JsonDict = json.loads(marker.read_text(encoding="utf-8"))
    stored: object = recorded.get("parameters")
    return stored == params.to_dict()


# What save_pretrained writes for a model and its tokenizer (a marker of an older heretic has
# no file list: these names are taken as its own).
_EXPORT_FILES = re.compile(
    r"(config|generation_config|tokenizer|tokenizer_config|special_tokens_map|added_tokens|"
    r"vocab|chat_template|preprocessor_config)\.(json|jinja|txt)|merges\.txt|tokenizer\.model|"
    r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?|" + MARKER
)


def _foreign_files(target: Path) -> list[str]:
    """Files in an existing `target` that no heretic export wrote (replacing it deletes it)."""
    if not target.exists():
        return []
    if not target.is_dir() or target.is_symlink():
        return [target.name]
    names = sorted(p.name for p in target.iterdir())
    marker = target / MARKER
    if not marker.is_file():
        return names
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, list):
        return [n for n in names if n not in {*recorded, MARKER}]
    return [n for n in names if not _EXPORT_FILES.fullmatch(n)]


def check_replaceable(target: Path) -> None:
    """Refuse to replace `target` when it holds anything heretic's export did not write."""
    foreign = _foreign_files(target)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"{target} holds files no heretic export wrote ({shown}); exporting would delete "
            "them, so nothing was written.",
            f"Move those files out of {target} (or delete the folder yourself), or give "
            "another --output, then run the same command again: the study resumes.",
        )


def _disk_full(exc: BaseException) -> bool:
    # safetensors reports ENOSPC as a SafetensorError carrying the OS message, not an OSError.
    return getattr(exc, "errno", None) == errno.ENOSPC or "os error 28" in str(exc)


def export_model(
    loaded: LoadedModel,
    directions: Directions,
    params: AblationParams,
    settings: Settings,
    target: Path,
    reporter: Reporter | None = None,
) -> Path:
    reporter = reporter or NullReporter()
    if existing_export(target, params):
        reporter.info(f"{target} already holds this export; not writing it again.")
        return target
    check_replaceable(target)  # before the work, not after it
    model: PreTrainedModel
    if _can_fold_in_place(loaded):
        model = loaded.model
    else:
        reporter.info("Loading the model again at full precision on the CPU to fold the edit.")
        model = _full_precision_copy(loaded, settings)
    fold(model, directions, params, settings)
    if settings.export_dtype != "auto":
        model = model.to(getattr(torch, settings.export_dtype))
    staging = target.with_name(f".{target.name}.partial")
    if staging.is_symlink():  # never write the export through a planted link
        staging.unlink()
    shutil.rmtree(staging, ignore_errors=True)
    try:
        model.save_pretrained(staging, max_shard_size=settings.max_shard_size)
        loaded.tokenizer.save_pretrained(staging)
        files = sorted(p.name for p in staging.iterdir())  # what a later export may replace
        record = {"parameters": params.to_dict(), "files": files}
        (staging / MARKER).write_text(json.dumps(record, indent=2))
    except (OSError, SafetensorError) as exc:
        shutil.rmtree(staging, ignore_errors=True)  # give the space back
        if not _disk_full(exc):
            raise
        raise DiskFullError(
            f"The disk holding {target.parent} filled up while the model was exported.",
            "Free space or move --output to a larger disk, then run the same command again: "
            "the study is complete, so only the export is redone.",
        ) from exc
    check_replaceable(target)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    reporter.info(f"Exported the abliterated model to {target}.")
    return target
