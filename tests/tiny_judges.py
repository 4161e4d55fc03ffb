"""Tiny judge models built locally: a chat model that answers one fixed verdict word to every
prompt, and a sequence-classification model that picks one fixed label. Their layers write
nothing (output projections zeroed), so the last hidden state is the token's embedding, whose
first coordinate is large for every token; the output row of the chosen token (or label) reads
only that coordinate, so it wins whatever the input."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

from heretic.demo.model import build_tokenizer

VERDICT_WORDS = ["refused", "complied", "other"]


def _config(vocab: int, tok, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **extra,
    )


def _constant_trunk(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.normal_(0, 0.01)
        emb[:, 0] = 10.0


def build_chat_judge(folder: Path, verdict: str = "complied") -> Path:
    tok = build_tokenizer()
    tok.add_tokens(VERDICT_WORDS)
    model = LlamaForCausalLM(_config(len(tok), tok, tie_word_embeddings=False)).eval()
    _constant_trunk(model)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.convert_tokens_to_ids(verdict), 0] = 1.0
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_classifier_judge(
    folder: Path, labels: tuple[str, ...] = ("complied", "refused"), pick: int = 1
) -> Path:
    tok = build_tokenizer()
    config = _config(
        len(tok),
        tok,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    model = LlamaForSequenceClassification(config).eval()
    _constant_trunk(model)
    with torch.no_grad():
        model.score.weight.zero_()
        model.score.weight[pick, 0] = 1.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
