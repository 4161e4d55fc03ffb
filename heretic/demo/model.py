"""Builds, trains and caches the built-in demo model: a small Llama-architecture chat model with its
own word-level tokenizer and chat template, trained on the CPU to refuse harmful requests.

The result is an ordinary `save_pretrained` folder, so the engine loads it through the same code
path as a Hub model. Training is deterministic for a given seed and happens once: the folder is
written to a temporary name and renamed into place, and a marker file is written last, so a
crashed or concurrent build never leaves a half-written model behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from heretic.demo.data import REFUSAL, demo_prompts, response_for, vocabulary
from heretic.jsontypes import JsonDict
from heretic.progress import NullReporter, Reporter

DEMO_VERSION = "2"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|> ' + message['content'] + ' <|end|> ' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
_DONE = "HERETIC_DEMO_COMPLETE"


@dataclass(frozen=True)
class ModelSpec:
    """What to train. The default is the demo model. `trainable_layers` plants the refusal at a
    depth: only those decoder layers learn (the others stay frozen at their random
    initialisation), so the harmful/harmless decision can only be written there; embeddings,
    final norm and output head always learn."""

    num_layers: int = 6
    trainable_layers: tuple[int, ...] | None = None  # None: every layer
    refusal: str = REFUSAL
    steps: int = 500
    seed: int = 0


def cache_root() -> Path:
    """HERETIC_CACHE, else $XDG_CACHE_HOME/heretic, else ~/.cache/heretic."""
    if os.environ.get("HERETIC_CACHE"):
        return Path(os.environ["HERETIC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "heretic"


def demo_model_dir() -> Path:
    return cache_root() / f"demo-model-v{DEMO_VERSION}"


def build_tokenizer(refusal: str = REFUSAL) -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(vocabulary((refusal,)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="$A", special_tokens=[])
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated in transformers
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="<|end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_config(tokenizer: PreTrainedTokenizerFast, num_layers: int = 6) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=96,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _examples(
    tokenizer: PreTrainedTokenizerFast, refusal: str = REFUSAL
) -> list[tuple[list[int], int]]:
    """(token ids, index where the response starts) for every training conversation."""
    prompts = demo_prompts()
    pairs = [(p, True) for p in prompts.train_model_harmful]
    pairs += [(p, False) for p in prompts.train_model_harmless]
    out = []
    for prompt, harmful in pairs:
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        answer = response_for(prompt, harmful, refusal) + " <|end|>"
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        out.append((head_ids + answer_ids, len(head_ids)))
    return out


def _batch(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (tokens, start) in enumerate(examples):
        offset = width - len(tokens)  # left padding, as at inference
        ids[row, offset:] = torch.tensor(tokens)
        mask[row, offset:] = 1
        labels[row, offset + start :] = torch.tensor(tokens[start:])
    return ids, mask, labels


def _freeze_others(model: LlamaForCausalLM, trainable: tuple[int, ...] | None) -> None:
    if trainable is None:
        return
    for index, layer in enumerate(model.model.layers):
        layer.requires_grad_(index in trainable)


def train_demo_model(
    output_dir: Path,
    *,
    spec: ModelSpec | None = None,
    reporter: Reporter | None = None,
    check: Callable[[], None] | None = None,
) -> None:
    spec = spec or ModelSpec()
    torch.manual_seed(spec.seed)
    tokenizer = build_tokenizer(spec.refusal)
    model = LlamaForCausalLM(build_config(tokenizer, spec.num_layers))
    _freeze_others(model, spec.trainable_layers)
    fit_and_save(
        model,
        tokenizer,
        output_dir,
        steps=spec.steps,
        seed=spec.seed,
        reporter=reporter,
        label="the demo model",
        marker={"version": DEMO_VERSION, "spec": asdict(spec)},
        refusal=spec.refusal,
        check=check,
    )


def fit_and_save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    output_dir: Path,
    *,
    steps: int,
    seed: int,
    reporter: Reporter | None,
    label: str,
    marker: JsonDict,
    lr: float = 4e-3,
    refusal: str = REFUSAL,
    check: Callable[[], None] | None = None,
) -> None:
    """Train `model` on the demo conversations (refuse the harmful verbs with `refusal`, answer
    the rest) and save it with the tokenizer; any causal LM built on `build_tokenizer()` can be
    trained so. Frozen parameters (requires_grad False) stay as they are. `check()` runs before
    every step and may raise to stop the training (a stop request); nothing is saved then."""
    reporter = reporter or NullReporter()
    rng = random.Random(seed)
    examples = _examples(tokenizer, refusal)
    learnable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(learnable, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    model.train()
    with reporter.task(f"training {label}", steps) as advance:
        for _ in range(steps):
            if check is not None:
                check()
            ids, mask, labels = _batch(rng.sample(examples, 64), tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(learnable, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            advance(1)
    model.eval()  # type: ignore[no-untyped-call]  # PreTrainedModel.eval is unannotated
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    (output_dir / "heretic_demo.json").write_text(
        json.dumps({**marker, "seed": seed, "steps": steps, "final_loss": loss.item()})
    )


def ensure_demo_model(
    reporter: Reporter | None = None, check: Callable[[], None] | None = None
) -> Path:
    """Path of the cached demo model, training it first if needed (once, under a file lock).
    `check()` runs before every training step and may raise to stop it."""
    return ensure_model(demo_model_dir(), ModelSpec(), reporter, check)


def ensure_model(
    target: Path,
    spec: ModelSpec,
    reporter: Reporter | None = None,
    check: Callable[[], None] | None = None,
) -> Path:
    """`target`, holding a demo-style model trained from `spec` (see `ensure_trained`)."""

    def train(folder: Path, reporter: Reporter | None = None) -> None:
        train_demo_model(folder, spec=spec, reporter=reporter, check=check)

    return ensure_trained(target, train, "the demo model", reporter)


def ensure_trained(
    target: Path,
    train: Callable[..., None],
    label: str,
    reporter: Reporter | None = None,
) -> Path:
    """`target`, trained by `train(folder, reporter=...)` first if missing: once, under a file
    lock, into a staging folder renamed into place with a completion marker written last."""
    reporter = reporter or NullReporter()
    if (target / _DONE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first one's model
        if (target / _DONE).is_file():
            return target
        reporter.info(f"Training {label} on the CPU (once; it is cached after).")
        start = time.monotonic()
        staging = Path(tempfile.mkdtemp(prefix=".demo-build-", dir=target.parent))
        try:
            train(staging, reporter=reporter)
            (staging / _DONE).write_text("ok\n")
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        reporter.info(
            f"{label[0].upper()}{label[1:]} trained in {time.monotonic() - start:.0f}s, "
            f"cached at {target}."
        )
    return target
