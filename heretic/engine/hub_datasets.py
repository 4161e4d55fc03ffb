"""Reads one split of a Hub dataset through huggingface_hub alone (no `datasets` dependency):
the split's data files (parquet, jsonl, json or csv) are downloaded into the HF cache and read.

A split is matched by file name: `train-00000-of-00001.parquet`, `data/train.jsonl`,
`test/0000.parquet` and the like.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from heretic.engine.tables import read_table
from heretic.errors import PromptSourceError

DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")


def split_files(files: list[str], split: str) -> list[str]:
    chosen = []
    for name in files:
        path = PurePosixPath(name)
        if path.suffix not in DATA_SUFFIXES:
            continue
        stem = path.name.split(".")[0]
        in_split_dir = split in path.parts[:-1]
        if stem == split or stem.startswith(f"{split}-") or in_split_dir:
            chosen.append(name)
    return sorted(chosen)


def read_split(dataset: str, split: str, *, where: str) -> dict[str, list[object]]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    try:
        # One client, so listing and downloads go to the same endpoint (HF_ENDPOINT, read now).
        api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
        files = api.list_repo_files(dataset, repo_type="dataset")
        chosen = split_files(files, split)
        if not chosen:
            raise PromptSourceError(
                f"Hub dataset {dataset} has no data files for split '{split}'.",
                "Check the split name (train, test, ...).",
            )
        columns: dict[str, list[object]] = {}
        for name in chosen:
            local = Path(api.hf_hub_download(dataset, name, repo_type="dataset"))
            for key, values in read_table(local).items():
                columns.setdefault(key, []).extend(values)
        return columns
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as exc:
        raise PromptSourceError(
            f"Could not read Hub dataset {dataset} ({where}): {str(exc).splitlines()[0]}",
            "Check the dataset id and your network, or pass local prompt files "
            "(--harmful-prompts FILE ...).",
        ) from exc
