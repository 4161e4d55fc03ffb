"""Loads a model and its tokenizer from a Hub id or a local folder (the demo model is a local
folder too), with dtype fallback, a device map and optional bitsandbytes quantization.

Guarantees: remote code runs only when `trust_remote_code` is set; a model that does not exist
is a `ModelNotFoundError` raised before any weight is read; the tokenizer pads on the left and
has a pad token.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from heretic.allocator import pin_mmap_threshold
from heretic.config.settings import Settings
from heretic.engine.architecture import tensor_attr
from heretic.errors import (
    ConfigError,
    ModelNotFoundError,
    OutOfMemoryError,
    UnsupportedArchitectureError,
)
from heretic.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from transformers import BitsAndBytesConfig, PreTrainedModel

    # What AutoModelForCausalLM.from_pretrained is annotated to return: a PreTrainedModel that
    # also has GenerationMixin's `generate`. transformers declares this class for type checking
    # only (no public name), so it exists here for annotations only.
    from transformers.models.auto.modeling_auto import _BaseModelWithGenerate as CausalLM

FALLBACK_DTYPES = ("bfloat16", "float16", "float32")
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


@dataclass
class LoadedModel:
    model: CausalLM
    tokenizer: PreTrainedTokenizerBase
    source: str  # what the user named (Hub id or path)
    path: str  # what was loaded (resolved demo path, or the same as source)
    dtype: torch.dtype
    quantized: bool

    @property
    def device(self) -> torch.device:
        return tensor_attr(self.model.get_input_embeddings(), "weight").device


def resolve_model_source(
    settings: Settings,
    reporter: Reporter | None = None,
    check: Callable[[], None] | None = None,
) -> tuple[str, str]:
    """(name for reports, loadable path or id). The demo model is trained here if needed
    (`check()` before every training step may raise to stop it)."""
    if settings.is_demo:
        from heretic.demo.model import ensure_demo_model

        return "heretic-demo", str(ensure_demo_model(reporter, check))
    return str(settings.model), str(settings.model)


def check_model_exists(path: str, settings: Settings) -> None:
    looks_local = path.startswith((".", "/", "~")) or os.path.exists(path)
    if looks_local:
        if not Path(path).expanduser().is_dir():
            raise ModelNotFoundError(
                f"Model folder {path} does not exist.",
                "Pass a folder written by save_pretrained, or a Hub id like org/name.",
            )
        if not (Path(path).expanduser() / "config.json").is_file():
            raise ModelNotFoundError(
                f"Model folder {path} has no config.json.",
                "Pass a folder written by save_pretrained.",
            )
        _check_local_config(Path(path).expanduser(), settings)
        return
    try:
        AutoConfig.from_pretrained(
            path, revision=settings.revision, trust_remote_code=settings.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True")
        raise ModelNotFoundError(
            f"Model '{path}' could not be found"
            + (" in the offline cache" if offline else "")
            + f": {str(exc).splitlines()[0]}",
            "Check the id and revision, your HF_TOKEN for gated models, or pass a local path.",
        ) from exc


def _check_local_config(folder: Path, settings: Settings) -> None:
    """A local config.json is read now, so a damaged one fails in milliseconds (exit 5, or 6
    for one transformers cannot read) even with --skip-preflight, not as a crash on load."""
    config = folder / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(
            f"The model's {config} cannot be read as JSON: {exc}.",
            "Restore the file (copy it again or re-download the model), then run again.",
        ) from None
    if not isinstance(data, dict):
        raise ModelNotFoundError(
            f"The model's {config} is not a JSON object.",
            "Restore the file (copy it again or re-download the model), then run again.",
        )
    try:
        AutoConfig.from_pretrained(folder, trust_remote_code=settings.trust_remote_code)
    except (ValueError, KeyError, OSError) as exc:
        raise UnsupportedArchitectureError(
            f"The config.json of {folder} is not one transformers can read: "
            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}.",
            "Update transformers, or pass --trust-remote-code for models that ship their code.",
        ) from None


def _dtype_candidates(settings: Settings) -> list[str]:
    first = settings.dtype
    if first not in ("auto", *FALLBACK_DTYPES):
        raise ConfigError(f"Unknown dtype '{first}'.", "Use auto, bfloat16, float16 or float32.")
    return [first] + [d for d in FALLBACK_DTYPES if d != first]


def _quantization_config(settings: Settings, dtype: str) -> BitsAndBytesConfig | None:
    if settings.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if dtype in ("auto", "bfloat16") else getattr(torch, dtype)
    if settings.quantization == "bnb-8bit":
        return BitsAndBytesConfig(load_in_8bit=True)  # type: ignore[no-untyped-call]  # unannotated in transformers
    return BitsAndBytesConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_use_double_quant=False,
    )


def load_tokenizer(path: str, settings: Settings) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(
        path, revision=settings.revision, trust_remote_code=settings.trust_remote_code
    )
    tokenizer.padding_side = "left"  # the last prompt token must sit at position -1
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def _refuse_offload(model: PreTrainedModel, settings: Settings, source: str) -> None:
    """accelerate quietly puts what does not fit on the GPUs on the CPU or disk, which makes
    every trial many times slower (one cause of the 30-hour run in the field notes)."""
    placement = getattr(model, "hf_device_map", None) or {}
    offloaded = sorted(name for name, where in placement.items() if str(where) in ("cpu", "disk"))
    if not offloaded or settings.device_map == "cpu" or settings.allow_offload:
        return
    raise OutOfMemoryError(
        f"{source} does not fit on the GPUs with device map '{settings.device_map}': accelerate "
        f"put {len(offloaded)} module(s) on the CPU or disk ({', '.join(offloaded[:4])}...), "
        "which would make every trial many times slower.",
        "Use --profile auto (it picks 4-bit or a split that fits), --quantization bnb-4bit, more "
        "GPUs, or --set allow_offload=true to accept the slow run.",
    )


def load_model(
    settings: Settings,
    reporter: Reporter | None = None,
    check: Callable[[], None] | None = None,
) -> LoadedModel:
    reporter = reporter or NullReporter()
    pin_mmap_threshold()  # before the model's and the passes' large blocks (allocator.py)
    source, path = resolve_model_source(settings, reporter, check)
    check_model_exists(path, settings)
    tokenizer = load_tokenizer(path, settings)
    errors: list[str] = []
    for dtype in _dtype_candidates(settings):
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                revision=settings.revision,
                trust_remote_code=settings.trust_remote_code,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                device_map=settings.device_map,
                quantization_config=_quantization_config(settings, dtype),
            )
        except torch.OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"Out of memory while loading {source} ({exc}).",
                "Use a profile with 4-bit quantization or a split device map (--profile auto "
                "chooses one), or a larger GPU.",
            ) from exc
        except (RuntimeError, TypeError, ValueError) as exc:
            errors.append(f"{dtype}: {str(exc).splitlines()[0]}")
            reporter.warn(f"Loading with dtype {dtype} failed; trying the next dtype.")
            continue
        _refuse_offload(model, settings, source)
        model.eval()  # type: ignore[no-untyped-call]  # PreTrainedModel.eval is unannotated
        # The parameters keep requires_grad=True on purpose: every pass runs under
        # inference_mode or no_grad, and with frozen weights torch's CPU linear of the strided
        # last-position view (logits_to_keep=1) expands the output head once per prompt
        # (issue 20: 2.5 GB and 5 s for 8 prompts on a 262k vocabulary).
        weight = tensor_attr(model.get_input_embeddings(), "weight")
        reporter.info(f"Loaded {source} ({weight.dtype}, device map {settings.device_map}).")
        return LoadedModel(
            model, tokenizer, source, path, weight.dtype, settings.quantization != "none"
        )
    raise ModelNotFoundError(
        f"Model {source} could not be loaded with any dtype: {'; '.join(errors)}.",
        "Check that the model is a causal LM supported by this transformers version.",
    )
