"""Which causal-LM model types of the installed transformers heretic understands, from the
module tree alone: each type's default config (layers capped at 4) is built on PyTorch's meta
device (no weights, no download) and passed to `describe`.

    python benchmarks/arch_coverage.py [MODEL_TYPE ...]

Prints one line per model type (dense / MoE layers and writers per MoE block, or the error
heretic would give), then the totals. Encoder and encoder-decoder types that transformers also
maps to causal LMs (BERT-likes, BART-likes) are counted as not understood.
"""

from __future__ import annotations

import sys
import warnings

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from heretic.engine.architecture import describe
from heretic.errors import HereticError


def _meta_model(model_type: str) -> torch.nn.Module:
    config = AutoConfig.for_model(model_type)
    for cfg in (config, getattr(config, "text_config", None)):
        if cfg is not None and getattr(cfg, "num_hidden_layers", None):
            cfg.num_hidden_layers = min(cfg.num_hidden_layers, 4)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def main() -> None:
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    types = sys.argv[1:] or sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    ok = moe = failed = unbuilt = 0
    for model_type in types:
        try:
            model = _meta_model(model_type)
        except Exception as exc:  # a config transformers cannot build without extras
            unbuilt += 1
            print(f"{model_type}: not built ({type(exc).__name__})", flush=True)
            continue
        try:
            arch = describe(model, ["attention", "mlp"])
        except HereticError as exc:
            failed += 1
            print(f"{model_type}: NOT UNDERSTOOD: {exc.message}", flush=True)
            continue
        ok += 1
        parts = max(len(entry.all_writers("mlp")) for entry in arch.layers)
        if arch.moe_layers:
            moe += 1
        print(
            f"{model_type}: ok, {arch.num_layers} layers, {len(arch.moe_layers)} MoE "
            f"(up to {parts} mlp writers per layer)",
            flush=True,
        )
    print(
        f"transformers {transformers.__version__}: {len(types)} causal-LM model types; "
        f"understood {ok} ({moe} with MoE layers), not understood {failed}, "
        f"not buildable from a default config {unbuilt}"
    )


if __name__ == "__main__":
    main()
