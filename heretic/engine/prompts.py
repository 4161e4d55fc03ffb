"""Prompt sources: a local .txt (one prompt per line), .jsonl/.json/.csv/.parquet with a column,
or a Hub dataset written `hub:DATASET_ID[:SPLIT][:COLUMN]`.

SPLIT may carry a slice like `train[:400]` or `test[100:200]`. For files the column is given
after `::` (`prompts.csv::goal`); without one, `text`, then `prompt`, then the only string column
is used. Every source is read and checked (missing, empty, unknown column) before a model loads.
"""

from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from heretic.config.settings import (
    HUB_HARMFUL_EVAL,
    HUB_HARMFUL_TRAIN,
    HUB_HARMLESS_EVAL,
    HUB_HARMLESS_TRAIN,
    Settings,
)
from heretic.engine.tables import read_table
from heretic.errors import PromptSourceError

_SPLIT = re.compile(r"^(?P<name>[\w.-]+)(\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")
PREFERRED_COLUMNS = ("text", "prompt", "instruction", "goal", "question")


@dataclass(frozen=True)
class PromptSets:
    """harmful/harmless make the directions; *_eval score every trial; *_verify are never
    scored by the search and only verify the chosen edit (empty when verify_split is 0)."""

    harmful: list[str]
    harmless: list[str]
    harmful_eval: list[str]
    harmless_eval: list[str]
    harmful_verify: list[str] = field(default_factory=list)
    harmless_verify: list[str] = field(default_factory=list)
    verify_source: str = "none"


def _slice(items: list[str], start: str | None, stop: str | None) -> list[str]:
    return items[int(start) if start else None : int(stop) if stop else None]


def _pick_column(columns: dict[str, list[object]], wanted: str | None, where: str) -> list[str]:
    if wanted is not None:
        if wanted not in columns:
            raise PromptSourceError(
                f"Prompt source {where} has no column '{wanted}' (columns: {', '.join(columns)}).",
                "Name an existing column after '::' (files) or as the last ':' part (hub:).",
            )
        return [str(v) for v in columns[wanted] if v is not None]
    for name in PREFERRED_COLUMNS:
        if name in columns:
            return [str(v) for v in columns[name] if v is not None]
    strings = [n for n, vals in columns.items() if vals and isinstance(vals[0], str)]
    if len(strings) == 1:
        return [str(v) for v in columns[strings[0]] if v is not None]
    raise PromptSourceError(
        f"Prompt source {where} has several columns ({', '.join(columns)}) and none is called "
        f"{' or '.join(PREFERRED_COLUMNS)}.",
        f"Name the column: {where}::COLUMN.",
    )


def _load_file(spec: str) -> list[str]:
    path_text, _, column = spec.partition("::")
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise PromptSourceError(
            f"Prompt file {path} does not exist.", "Check the path, or use hub:DATASET_ID."
        )
    if path.suffix.lower() in (".txt", ""):
        return _text_lines(path)
    try:
        return _pick_column(read_table(path), column or None, spec)
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error, OSError) as exc:
        raise PromptSourceError(
            f"Could not read prompt file {path}: {exc}.", "Fix the file."
        ) from exc


def _text_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a BOM is dropped); PromptSourceError for a file that
    is binary or in another encoding, before any model loads."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptSourceError(
            f"Could not read prompt file {path}: {exc.strerror or exc}.",
            "Check the path and its permissions.",
        ) from None
    if b"\x00" in data:
        raise PromptSourceError(
            f"Prompt file {path} is binary (it holds NUL bytes), not text with one prompt a line.",
            "Give a UTF-8 text file with one prompt per line (or a .jsonl/.csv/.parquet file "
            "with a text column).",
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptSourceError(
            f"Prompt file {path} is not UTF-8 text (byte {exc.start} cannot be decoded).",
            f"Convert it to UTF-8, e.g. `iconv -f latin1 -t utf-8 {path} > prompts.txt`.",
        ) from None
    return text.splitlines()


_HUB = re.compile(
    r"^hub:(?P<dataset>[^:\[\]]+)"
    r"(?::(?P<split>[\w.-]+(?:\[-?\d*:-?\d*\])?)?)?"
    r"(?::(?P<column>[^:]+))?$"
)


def _load_hub(spec: str) -> list[str]:
    found = _HUB.match(spec)
    match = _SPLIT.match(found["split"] or "train") if found else None
    if found is None or match is None:
        raise PromptSourceError(
            f"Malformed Hub prompt source '{spec}'.",
            "Write it as hub:DATASET_ID[:SPLIT][:COLUMN], e.g. hub:mlabonne/harmful_behaviors:train[:400]:text.",
        )
    from heretic.engine.hub_datasets import read_split

    columns = read_split(found["dataset"], match["name"], where=spec)
    return _slice(_pick_column(columns, found["column"], spec), match["start"], match["stop"])


def load_prompts(spec: str) -> list[str]:
    """The prompts of one source, stripped, empty lines dropped. Raises if none are left."""
    raw = _load_hub(spec) if spec.startswith("hub:") else _load_file(spec)
    prompts = [p.strip() for p in raw if p and p.strip()]
    if not prompts:
        raise PromptSourceError(
            f"Prompt source {spec} is empty.", "Give it at least one non-empty prompt."
        )
    return prompts


def resolve_prompt_specs(settings: Settings) -> dict[str, str | None]:
    """Source spec per set; None means the demo model's built-in set."""
    defaults = (
        dict.fromkeys(("harmful", "harmless", "harmful_eval", "harmless_eval"))
        if settings.is_demo
        else {
            "harmful": HUB_HARMFUL_TRAIN,
            "harmless": HUB_HARMLESS_TRAIN,
            "harmful_eval": HUB_HARMFUL_EVAL,
            "harmless_eval": HUB_HARMLESS_EVAL,
        }
    )
    given = {
        "harmful": settings.harmful_prompts,
        "harmless": settings.harmless_prompts,
        "harmful_eval": settings.harmful_eval_prompts,
        "harmless_eval": settings.harmless_eval_prompts,
    }
    return {key: given[key] or defaults[key] for key in given}


def split_for_verification(
    prompts: list[str], share: float, what: str
) -> tuple[list[str], list[str]]:
    """(search part, verification part): a fixed pseudo-random share of the prompts is held back.

    The permutation's seed is fixed, not the search seed, so a resumed or re-seeded study keeps
    scoring the same prompts. Both parts keep the source order."""
    if share <= 0:
        return prompts, []
    n_verify = round(len(prompts) * share)
    if n_verify < 1 or n_verify >= len(prompts):
        raise PromptSourceError(
            f"The {what} evaluation set has {len(prompts)} prompt(s): too few to hold back "
            f"{share:.0%} for verification and still score the search on the rest.",
            f"Give more {what} evaluation prompts, a separate verify_{what}_prompts set, or "
            "--set verify_split=0 (the report then verifies on the search's own prompts).",
        )
    held = set(random.Random(len(prompts)).sample(range(len(prompts)), n_verify))
    search = [p for i, p in enumerate(prompts) if i not in held]
    verify = [p for i, p in enumerate(prompts) if i in held]
    return search, verify


def load_prompt_sets(settings: Settings) -> PromptSets:
    from heretic.demo.data import demo_prompts

    demo = demo_prompts()
    loaded = {}
    for key, spec in resolve_prompt_specs(settings).items():
        loaded[key] = load_prompts(spec) if spec else list(getattr(demo, key))
    given = {
        "harmful": settings.verify_harmful_prompts,
        "harmless": settings.verify_harmless_prompts,
    }
    sources = []
    for what, spec in given.items():
        if spec:
            loaded[f"{what}_verify"] = load_prompts(spec)
            sources.append(f"{what}: {spec}")
        else:
            loaded[f"{what}_eval"], loaded[f"{what}_verify"] = split_for_verification(
                loaded[f"{what}_eval"], settings.verify_split, what
            )
            if settings.verify_split > 0:
                sources.append(
                    f"{what}: {settings.verify_split:.0%} of the evaluation set held back"
                )
    return PromptSets(**loaded, verify_source="; ".join(sources) or "none")
