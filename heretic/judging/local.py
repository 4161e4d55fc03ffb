"""Judges that run a model on the run's own device.

- `ChatJudge`: an instruction-tuned chat model given the classification prompt
  (`heretic.judging.prompt`), answering greedily in a few tokens; its first verdict word counts.
- `ClassifierJudge`: a sequence-classification model over the (request, answer) text pair;
  its highest-scoring label is mapped to a verdict by `judge_labels` (or by the label's name
  when it is one: refused/refusal, complied/compliance, other).

Both load lazily on first use and free their memory on `close()`, so the search model and the
judge share the device only when the judge is asked to judge during the search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from heretic.engine.judge import VERDICTS, Pair, Verdict
from heretic.errors import JudgeError
from heretic.judging.prompt import SYSTEM, find_verdict, messages, parse_verdict, user_message


def _load_error(model: str, exc: Exception) -> JudgeError:
    return JudgeError(
        f"The judge model '{model}' could not be loaded: {type(exc).__name__}: {exc}",
        "Give a local folder or a Hub id that is available offline (download it first with "
        "`hf download`), or another `--judge`.",
    )


class _Local:
    """What both local judges share: the model path, the device, lazy loading, batching."""

    kind = "local"

    def __init__(self, model: str, *, device: str, batch_size: int = 16) -> None:
        self.model_id = model
        self.device = device
        self.batch_size = max(1, batch_size)
        self.name = f"{self.kind}:{model}"
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None

    def _load_model(self) -> PreTrainedModel:
        raise NotImplementedError

    def _loaded(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        if self._model is None or self._tokenizer is None:
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
                model: Any = self._load_model()  # .to() is wrapped loosely in transformers
                self._model = model.to(self.device).eval()
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise _load_error(self.model_id, exc) from exc
        return self._model, self._tokenizer

    def _batches(self, pairs: Sequence[Pair]) -> list[Sequence[Pair]]:
        return [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]

    def close(self) -> None:
        self._model = None
        self._tokenizer = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class ChatJudge(_Local):
    kind = "chat"

    def __init__(
        self, model: str, *, device: str, batch_size: int = 16, max_new_tokens: int = 8
    ) -> None:
        super().__init__(model, device=device, batch_size=batch_size)
        self.max_new_tokens = max_new_tokens

    def _load_model(self) -> PreTrainedModel:
        return AutoModelForCausalLM.from_pretrained(self.model_id, dtype="auto")

    def _prompt(self, tok: PreTrainedTokenizerBase, pair: Pair) -> str:
        if tok.chat_template:
            text = tok.apply_chat_template(
                messages(pair), tokenize=False, add_generation_prompt=True
            )
            return str(text)
        return f"{SYSTEM}\n\n{user_message(pair)}"  # a base model: the prompt as plain text

    @torch.inference_mode()
    def replies(self, pairs: Sequence[Pair]) -> list[str]:
        loaded, tok = self._loaded()
        model: Any = loaded  # generate() is typed through a mixin mypy cannot follow
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"  # generation continues every row from its own last token
        out: list[str] = []
        for batch in self._batches(pairs):
            inputs = tok(
                [self._prompt(tok, p) for p in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(model.device)
            ids = model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
            width = inputs["input_ids"].shape[1]
            out += tok.batch_decode(ids[:, width:], skip_special_tokens=True)
        return out

    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
        return [parse_verdict(r, self.name) for r in self.replies(pairs)]


def label_map(id2label: Mapping[int, str], given: Mapping[str, str]) -> dict[int, Verdict]:
    """Each label id's verdict: from `given` (label name -> verdict) first, else the label's
    own name when it reads as one. A label with neither is an error: guessing would turn an
    unknown class into a refusal count."""
    out: dict[int, Verdict] = {}
    unmapped = []
    for idx, label in id2label.items():
        wanted = given.get(label)
        verdict = find_verdict(wanted) if wanted is not None else find_verdict(label)
        if wanted is not None and wanted not in VERDICTS:
            verdict = None
        if verdict is None:
            unmapped.append(label)
        else:
            out[int(idx)] = verdict
    if unmapped:
        raise JudgeError(
            f"The classifier's labels {unmapped} have no verdict (labels: "
            f"{list(id2label.values())}).",
            'Map each label with judge_labels, e.g. --set \'judge_labels={"LABEL_0": '
            '"complied", "LABEL_1": "refused"}\' (verdicts: refused, complied, other).',
        )
    return out


class ClassifierJudge(_Local):
    kind = "classifier"

    def __init__(
        self,
        model: str,
        *,
        device: str,
        batch_size: int = 16,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(model, device=device, batch_size=batch_size)
        self.labels = dict(labels or {})
        self._map: dict[int, Verdict] | None = None

    def _load_model(self) -> PreTrainedModel:
        model: Any = AutoModelForSequenceClassification.from_pretrained(self.model_id)
        self._map = label_map(model.config.id2label, self.labels)
        return model  # type: ignore[no-any-return]  # the Auto class is typed loosely

    @torch.inference_mode()
    def verdicts(self, pairs: Sequence[Pair]) -> list[Verdict]:
        model, tok = self._loaded()
        assert self._map is not None
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        out: list[Verdict] = []
        for batch in self._batches(pairs):
            inputs = tok(
                [p.request for p in batch],
                [p.answer for p in batch],
                return_tensors="pt",
                padding=True,
                truncation=True,
            ).to(model.device)
            best = model(**inputs).logits.argmax(-1).tolist()
            out += [self._map[int(i)] for i in best]
        return out
