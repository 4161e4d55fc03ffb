"""Damage over whole answers: KL(base || edited) teacher-forced along the base model's answers.

First-token KL cannot see an edit that keeps the first word of an answer and changes the rest
(issue 18). This module scores the whole answer prefix instead:

- Reference (once per study): for each harmless search prompt, the base model's greedy answer
  of up to `tokens` tokens (shorter when it ends: the end-of-sequence token is the last one
  counted), and the base model's next-token distributions at every answer position.
- Measure (per trial): the edited model is fed prompt + base answer (teacher forcing, one
  forward pass per batch, no generation); at each answer position j the KL divergence
  KL(p_base || p_edited) of the distribution of token j. A prompt's damage is the mean over its
  answer positions, the trial's the mean over prompts (every answer weighs the same). Position 0
  is the first-token KL, reported as well.

Shapes: P prompts, N = `tokens`, k = `top_k`, V the vocabulary. Logits are computed at the
answer positions only (`logits_to_keep`: the last n positions of the teacher-forced input are
exactly the n answer positions, because prompts are left padded), one answer at a time: the
output head is applied to each answer's n hidden states (output_head.py), so the pass holds
n x V logits and their float32 copies, never B x n x V.

Storage (what is kept, and why it is small): the base distribution at each position is kept as
its k most likely tokens plus one "everything else" bucket: top_idx [P, N, k], top_logp
[P, N, k], tail_logp [P, N]. The KL is computed on that partition, which is a lower bound of the
full-vocabulary KL (merging outcomes never increases a KL divergence) and equal to it when the
base model puts its mass in its top k, as a greedy answer's positions mostly do;
benchmarks/bench_answer_kl.py measures the gap. Full log-probs would be P x N x V floats
(100 prompts, 32 tokens, a 152k vocabulary: 1.9 GB); the bucketed ones are 3 MB at k=128.

The reference is written into the study folder atomically, under a lock (workers share it), with
a fingerprint of what it was built from (the formatted prompts, N, k) in its metadata: a resume
reuses it, so every trial of a study is scored against the same answers; a file that does not
match or cannot be read is a `StudyError`, never a silent rebuild.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import GenerationConfig

from heretic.atomic import write_with
from heretic.engine.batching import Batcher
from heretic.engine.chat import ChatFormat, encode, format_chat
from heretic.engine.loading import LoadedModel
from heretic.engine.output_head import OutputHead, log_prob_rows
from heretic.errors import StudyError
from heretic.statefiles import held_lock

REFERENCE_FILE = "answer_reference.safetensors"
DEFAULT_TOKENS = 32
DEFAULT_TOP_K = 128
_FORMAT = "heretic-answer-reference-1"
# Padding of the reference past an answer's end: all mass in the tail, finite, so the masked
# positions compute to finite numbers that the mask then drops.
_PAD_LOGP = -1e4
R = TypeVar("R")


@dataclass(frozen=True)
class Damage:
    """One edit's damage on the harmless prompts."""

    answer_kl: float  # mean teacher-forced KL over the whole answer prefix
    first_token_kl: float  # the same KL at the first answer position only
    per_prompt: list[float]  # answer KL of each prompt, in prompt order


@dataclass
class Reference:
    """The base model's answers and its bucketed distributions along them (CPU tensors)."""

    answer_ids: torch.Tensor  # [P, N] int64, padded after each answer's end
    answer_len: torch.Tensor  # [P] int64, 1..N: tokens counted, the end token included
    top_idx: torch.Tensor  # [P, N, k] int64: the base model's k most likely tokens
    top_logp: torch.Tensor  # [P, N, k] float32: their log-probs
    tail_logp: torch.Tensor  # [P, N] float32: log of the mass of every other token
    fingerprint: str

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "answer_ids": self.answer_ids,
            "answer_len": self.answer_len,
            "top_idx": self.top_idx,
            "top_logp": self.top_logp,
            "tail_logp": self.tail_logp,
        }

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


def bucket(logp: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs at idx, log of the remaining mass) for log-probs [..., V] and idx [..., k].
    The remainder is summed in float64: near 1 a float32 sum cannot tell 1e-7 from 0."""
    top = logp.gather(-1, idx)
    inside = top.double().exp().sum(-1).clamp(max=1.0 - 1e-15)
    return top, torch.log1p(-inside).float()


def bucket_kl(
    base_top: torch.Tensor, base_tail: torch.Tensor, top: torch.Tensor, tail: torch.Tensor
) -> torch.Tensor:
    """KL(base || edited) on the partition {each of the k tokens, the rest}: [...] from the
    bucketed log-probs [..., k] and tails [...]. Never negative (clamped against rounding)."""
    inside = _plogq(base_top, top).sum(-1)
    outside = _plogq(base_tail, tail)
    return (inside + outside).clamp(min=0.0)


def _plogq(base: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """p * (log p - log q), 0 where p is 0 (log p = -inf would make it NaN)."""
    p = base.exp()
    return torch.where(p > 0, p * (base - edited), torch.zeros_like(p))


def fingerprint(texts: Sequence[str], tokens: int, top_k: int) -> str:
    digest = hashlib.sha256(json.dumps([_FORMAT, tokens, top_k, list(texts)]).encode())
    return digest.hexdigest()[:16]


class AnswerKL:
    """The answer-prefix damage of the model in `loaded` as it is now (edited or not)."""

    def __init__(
        self,
        loaded: LoadedModel,
        prompts: Sequence[str],
        *,
        chat: ChatFormat,
        batcher: Batcher,
        tokens: int = DEFAULT_TOKENS,
        top_k: int = DEFAULT_TOP_K,
    ) -> None:
        if tokens < 1 or top_k < 1:
            raise ValueError("tokens and top_k must be at least 1")
        self.loaded = loaded
        self.prompts = list(prompts)
        self.chat = chat
        self.batcher = batcher
        self.tokens = tokens
        self.top_k = top_k  # a vocabulary smaller than k keeps all of it
        self.reference: Reference | None = None
        texts = [format_chat(loaded.tokenizer, p, chat) for p in self.prompts]
        self.fingerprint = fingerprint(texts, tokens, self.top_k)
        forward = inspect.signature(loaded.model.forward).parameters
        self._pass_positions = "position_ids" in forward
        self._input_cache: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        head = OutputHead(loaded.model)
        self._head: OutputHead | None = head if head.usable else None

    # --- the reference ---------------------------------------------------------------

    def prepare(self, study_dir: Path | None = None) -> Reference:
        """The reference: read from `study_dir` when it holds one, else built from the model
        as it is now (call this before any edit is applied) and saved there."""
        self._input_cache.clear()  # inputs are built from the reference's answers
        if study_dir is None:
            self.reference = self.build()
            return self.reference
        path = study_dir / REFERENCE_FILE
        study_dir.mkdir(parents=True, exist_ok=True)
        with held_lock(study_dir / ".answer_reference.lock"):  # one worker builds; others read
            if path.exists():
                self.reference = self.load(path)
            else:
                self.reference = self.build()
                self.save(path, self.reference)
        return self.reference

    @torch.inference_mode()
    def build(self) -> Reference:
        answers = [a for part in self.batcher.run(self.prompts, self._generate) for a in part]
        ids = torch.stack([a[0] for a in answers])
        lengths = torch.tensor([a[1] for a in answers], dtype=torch.long)
        parts = self._teacher_forced(ids, lengths, self._base_bucket)
        top_idx = torch.cat([p[0] for p in parts])
        top_logp = torch.cat([p[1] for p in parts])
        tail = torch.cat([p[2] for p in parts])
        return Reference(ids, lengths, top_idx, top_logp, tail, self.fingerprint)

    def save(self, path: Path, reference: Reference) -> None:
        meta = {"format": _FORMAT, "fingerprint": reference.fingerprint}
        write_with(path, lambda tmp: save_file(reference.tensors(), str(tmp), metadata=meta))

    def load(self, path: Path) -> Reference:
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
            t = load_file(str(path))
            ref = Reference(
                t["answer_ids"],
                t["answer_len"],
                t["top_idx"],
                t["top_logp"],
                t["tail_logp"],
                meta.get("fingerprint", ""),
            )
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            raise StudyError(
                f"The base answers saved in {path} cannot be read ({exc}).",
                f"Delete {path.name}: the next run generates the base model's answers again "
                "(trials already in the study were scored against the old file).",
            ) from exc
        if ref.fingerprint != self.fingerprint or ref.answer_ids.shape[0] != len(self.prompts):
            raise StudyError(
                f"The base answers saved in {path} were made for other harmless prompts, another "
                f"chat format or another damage_tokens ({ref.answer_ids.shape[0]} prompts, "
                f"fingerprint {ref.fingerprint or 'none'}; now {len(self.prompts)} prompts, "
                f"{self.fingerprint}).",
                "Use a new --output (or study folder) for new prompts or settings, or put the "
                "old ones back to resume this study.",
            )
        return ref

    def _generate(self, batch: Sequence[str], _start: int) -> list[tuple[torch.Tensor, int]]:
        """Greedy answers of one batch: (ids [N] padded, length counting the end token)."""
        tok, model = self.loaded.tokenizer, self.loaded.model
        cfg = model.generation_config
        eos = cfg.eos_token_id if cfg.eos_token_id is not None else tok.eos_token_id
        config = GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
            max_new_tokens=self.tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
            bos_token_id=cfg.bos_token_id,
        )
        inputs = encode(tok, list(batch), self.chat, self.loaded.device)
        width = inputs["input_ids"].shape[1]
        out = model.generate(**inputs, generation_config=config)[:, width:].cpu()
        ends = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        answers = []
        for row in out:
            ids = torch.full((self.tokens,), pad, dtype=torch.long)
            ids[: row.shape[0]] = row
            length = row.shape[0]
            for j, t in enumerate(row.tolist()):
                if t in ends:
                    length = j + 1
                    break
            answers.append((ids, max(length, 1)))
        return answers

    # --- the measure -----------------------------------------------------------------

    @torch.inference_mode()
    def measure(self) -> Damage:
        """The damage of the model as it is now against the reference."""
        ref = self.reference
        assert ref is not None, "prepare() first"
        per_position = torch.cat(self._teacher_forced(ref.answer_ids, ref.answer_len, self._kl))
        valid = torch.arange(self.tokens)[None, :] < ref.answer_len[:, None]  # [P, N]
        per_prompt = (per_position * valid).sum(-1) / ref.answer_len
        return Damage(
            answer_kl=float(per_prompt.mean()),
            first_token_kl=float(per_position[:, 0].mean()),
            per_prompt=[float(v) for v in per_prompt],
        )

    @torch.inference_mode()
    def unchanged(self) -> list[bool]:
        """Per prompt: is the model's own greedy answer, as it is now, token for token the base
        answer (through its end token, or all N tokens)? Generates: for benchmarks and checks,
        not for every trial."""
        ref = self.reference
        assert ref is not None, "prepare() first"
        answers = [a for part in self.batcher.run(self.prompts, self._generate) for a in part]
        return [
            torch.equal(ids[:n], ref.answer_ids[i, :n])
            for i, ((ids, _), n) in enumerate(zip(answers, ref.answer_len.tolist(), strict=True))
        ]

    def _teacher_forced(
        self,
        ids: torch.Tensor,
        lengths: torch.Tensor,
        per_batch: Callable[[Iterator[torch.Tensor], int, int], R],
    ) -> list[R]:
        """One forward pass per batch over prompt + answer; per_batch(rows, index of the
        batch's first prompt, n) for each, where n is the batch's longest answer and rows
        yields each prompt's float32 log-probs [n, V] in turn."""

        def run(batch: Sequence[str], start: int) -> R:
            n = int(lengths[start : start + len(batch)].max())  # this batch's longest answer
            inputs = self._inputs(ids, lengths, start, len(batch))
            return per_batch(self._log_prob_rows(inputs, n), start, n)

        return self.batcher.run(self.prompts, run)

    def _log_prob_rows(self, inputs: dict[str, torch.Tensor], n: int) -> Iterator[torch.Tensor]:
        # The last n positions (W-1 .. W+n-2) predict answer tokens 0 .. n-1.
        model, head = self.loaded.model, self._head
        if head is not None:
            with head.capture() as seen:
                last = model(**inputs, use_cache=False, logits_to_keep=n).logits[:, -1]
            if len(seen) == 1 and seen[0].shape[1] == n and head.matches(seen[0][:, -1], last):
                return log_prob_rows(head, seen[0], n)
            self._head = None  # this architecture's forward does more than its head: full logits
        logits = model(**inputs, use_cache=False, logits_to_keep=n).logits  # [B, n, V]
        return (torch.log_softmax(row.float(), dim=-1) for row in logits[:, -n:])

    def _inputs(
        self, ids: torch.Tensor, lengths: torch.Tensor, start: int, size: int
    ) -> dict[str, torch.Tensor]:
        """Prompt + answer of one batch as model inputs, built once per batch and kept: every
        trial feeds the same tokens (a batch size halved on out-of-memory makes new keys).
        Only ever called with the reference's answers (or, in build, the answers that become
        it)."""
        key = (start, size)
        cached = self._input_cache.get(key)
        if cached is not None:
            return cached
        tok, device = self.loaded.tokenizer, self.loaded.device
        rows = slice(start, start + size)
        n = int(lengths[rows].max())
        prompt = encode(tok, self.prompts[rows], self.chat, device)
        answer = ids[rows, : n - 1].to(device)  # [B, n-1]: token j predicts token j+1
        real = torch.arange(n - 1, device=device)[None, :] < lengths[rows, None].to(device)
        mask = torch.cat([prompt["attention_mask"], real.to(prompt["attention_mask"].dtype)], 1)
        inputs = {"input_ids": torch.cat([prompt["input_ids"], answer], 1), "attention_mask": mask}
        if self._pass_positions:
            # The positions generate() gave the answer: counted from the first real token.
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        self._input_cache[key] = inputs
        return inputs

    def _base_bucket(
        self, rows: Iterator[torch.Tensor], start: int, n: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx, top, tail = [], [], []
        for logp in rows:
            row_top, row_idx = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1)  # [n, k]
            _, row_tail = bucket(logp, row_idx)
            idx.append(_pad(row_idx, self.tokens, 0))
            top.append(_pad(row_top, self.tokens, _PAD_LOGP))
            tail.append(_pad(row_tail, self.tokens, 0.0))
            del logp  # before the next row is computed: one row's log-probs at a time
        return torch.stack(idx).cpu(), torch.stack(top).cpu(), torch.stack(tail).cpu()

    def _kl(self, rows: Iterator[torch.Tensor], start: int, n: int) -> torch.Tensor:
        ref = self.reference
        assert ref is not None
        kls: list[torch.Tensor] = []
        # Not enumerate(): it keeps the previous row alive in its reused tuple while the next
        # one is computed.
        for logp in rows:
            r = start + len(kls)
            idx = ref.top_idx[r, :n].to(logp.device)
            top, tail = bucket(logp, idx)
            base_top = ref.top_logp[r, :n].to(logp.device)
            base_tail = ref.tail_logp[r, :n].to(logp.device)
            kls.append(_pad(bucket_kl(base_top, base_tail, top, tail).cpu(), self.tokens, 0.0))
            del logp, top, tail  # before the next row is computed
        return torch.stack(kls)


def _pad(t: torch.Tensor, n: int, value: float) -> torch.Tensor:
    """t [m, ...] padded along dim 0 to n rows with value."""
    if t.shape[0] == n:
        return t
    pad = torch.full((n - t.shape[0], *t.shape[1:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, pad])
