"""Reading a table of prompts from a file: .csv, .json/.jsonl (a list of objects) or .parquet,
as columns. Used for local prompt files and for the files of a Hub dataset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from heretic.errors import PromptSourceError


def read_table(path: Path) -> dict[str, list[object]]:
    """The file's columns (name -> values in row order); PromptSourceError for a file type
    it does not read or JSON that is not a list of objects."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table: dict[str, list[object]] = pq.read_table(path).to_pydict()  # untyped
        except (pyarrow.ArrowException, OSError) as exc:
            raise PromptSourceError(
                f"{path} is not a readable parquet file ({str(exc).splitlines()[0]}).",
                "Replace it with a valid parquet file (a download may have been cut off), or "
                "give the prompts as .txt, .jsonl or .csv.",
            ) from None
        return table
    if suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif suffix in (".jsonl", ".json"):
        text = path.read_text(encoding="utf-8")
        rows = (
            json.loads(text)
            if suffix == ".json"
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise PromptSourceError(f"{path} is not a list of JSON objects.", "One object a line.")
    else:
        raise PromptSourceError(
            f"Unsupported prompt file type '{suffix}' ({path}).",
            "Use .txt, .jsonl, .json, .csv or .parquet, or hub:DATASET_ID:SPLIT:COLUMN.",
        )
    columns: dict[str, list[object]] = {}
    for row in rows:
        for key, value in row.items():
            columns.setdefault(key, []).append(value)
    return columns
