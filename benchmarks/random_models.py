"""Random-weight models of real shapes with real vocabulary sizes, built here (no download).

    python benchmarks/random_models.py gemma3-270m OUT_DIR [--layers N]

writes a model folder `heretic run --model OUT_DIR` loads: bf16 safetensors and a word-level
tokenizer with exactly the model's vocabulary (the demo tokenizer's words, then fillers
`t<id>`), so every id a random model generates decodes to a word and no answer is empty.
The shapes (vocabulary, hidden size, heads, intermediate size, layer count) are those of the
named public models' config.json files; the weights are random.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedTokenizerFast

from heretic.demo.model import CHAT_TEMPLATE, build_tokenizer

SHAPES: dict[str, dict[str, Any]] = {
    # TinyLlama-1.1B: the Llama 2 tokenizer (32,000 tokens)
    "tinyllama-1.1b": dict(
        model_type="llama",
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=5632,
        num_hidden_layers=22,
        num_attention_heads=32,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    ),
    # Llama 3.2 1B (128,256 tokens, tied embeddings)
    "llama3.2-1b": dict(
        model_type="llama",
        vocab_size=128256,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        tie_word_embeddings=True,
    ),
    # Qwen2.5 0.5B (151,936 tokens, tied embeddings)
    "qwen2.5-0.5b": dict(
        model_type="qwen2",
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    ),
    # Gemma 3 270M (262,144 tokens, tied embeddings; 5 sliding-window layers per global one)
    "gemma3-270m": dict(
        model_type="gemma3_text",
        vocab_size=262144,
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=18,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        query_pre_attn_scalar=256,
        sliding_window=512,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        tie_word_embeddings=True,
    ),
}


def shape_config(name: str, layers: int | None = None) -> PretrainedConfig:
    """The config of shape `name`, optionally with fewer decoder layers."""
    spec = dict(SHAPES[name])
    model_type = spec.pop("model_type")
    if layers is not None:
        spec["num_hidden_layers"] = layers
    tokenizer = build_tokenizer()
    spec.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config: PretrainedConfig = AutoConfig.for_model(model_type, **spec)
    config.dtype = torch.bfloat16
    return config


def full_vocab_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """The demo tokenizer's words at their usual ids, then fillers up to `vocab_size`."""
    demo = build_tokenizer()
    vocab = dict(demo.get_vocab())
    for i in range(len(vocab), vocab_size):
        vocab[f"t{i}"] = i
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()  # type: ignore[assignment]
    core.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])  # type: ignore[assignment]
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(config: PretrainedConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model: torch.nn.Module = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return model.eval()


def save_folder(name: str, out: Path, layers: int | None = None) -> Path:
    config = shape_config(name, layers)
    model = build_model(config)
    model.save_pretrained(out)  # type: ignore[operator]
    full_vocab_tokenizer(config.vocab_size).save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("out", type=Path)
    parser.add_argument("--layers", type=int)
    args = parser.parse_args()
    folder = save_folder(args.shape, args.out, args.layers)
    count = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(folder).parameters())
    print(f"{args.shape}: {count:,} parameters written to {folder}")


if __name__ == "__main__":
    main()
