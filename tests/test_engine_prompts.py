"""Prompt sources: text, JSONL, CSV, Parquet, column choice, Hub specs, and clear errors."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from heretic.config.settings import Settings
from heretic.engine.hub_datasets import split_files
from heretic.engine.prompts import load_prompt_sets, load_prompts, resolve_prompt_specs
from heretic.errors import PromptSourceError


def test_text_file_one_prompt_per_line(tmp_path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("first\n\n  second  \n")
    assert load_prompts(str(path)) == ["first", "second"]


def test_tables_pick_the_named_or_usual_column(tmp_path) -> None:
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "prompt": f"q{i}"}) for i in range(3)))
    assert load_prompts(str(jsonl)) == ["q0", "q1", "q2"]
    csv_path = tmp_path / "p.csv"
    csv_path.write_text("goal,target\nhack a bank,Sure\nrob a car,Sure\n")
    assert load_prompts(f"{csv_path}::goal") == ["hack a bank", "rob a car"]
    parquet = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "n": [1, 2]}), parquet)
    assert load_prompts(str(parquet)) == ["a", "b"]


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: str(d / "missing.txt"), "does not exist"),
        (lambda d: (d / "e.txt").write_text("\n\n") and str(d / "e.txt"), "is empty"),
        (lambda d: (d / "t.csv").write_text("a,b\n1,2\n") and f"{d / 't.csv'}::nope", "no column"),
        (lambda d: (d / "t.csv").write_text("a,b\nx,y\n") and str(d / "t.csv"), "several columns"),
        (lambda d: (d / "t.xml").write_text("<x/>") and str(d / "t.xml"), "Unsupported"),
        (lambda d: "hub:", "Malformed"),
        (lambda d: "hub:org/set:train[oops]:text", "Malformed"),
    ],
)
def test_bad_sources_are_clear_errors(tmp_path, make, needle) -> None:
    with pytest.raises(PromptSourceError) as err:
        load_prompts(make(tmp_path))
    assert needle in err.value.paragraph()


def test_hub_source_offline_is_a_prompt_error_not_a_traceback() -> None:
    with pytest.raises(PromptSourceError) as err:
        load_prompts("hub:mlabonne/harmful_behaviors:train[:400]:text")
    assert "mlabonne/harmful_behaviors" in err.value.message


def test_split_files_match_common_layouts() -> None:
    files = [
        "README.md",
        "data/train-00000-of-00001.parquet",
        "data/test-00000-of-00001.parquet",
        "valid/0000.parquet",
        "test.jsonl",
    ]
    assert split_files(files, "train") == ["data/train-00000-of-00001.parquet"]
    assert split_files(files, "test") == ["data/test-00000-of-00001.parquet", "test.jsonl"]
    assert split_files(files, "valid") == ["valid/0000.parquet"]


def test_defaults_demo_sets_for_demo_and_hub_sets_for_real_models(tmp_path) -> None:
    demo = load_prompt_sets(Settings())
    assert len(demo.harmful) == 64 and len(demo.harmful_eval) + len(demo.harmful_verify) == 50
    assert not set(demo.harmful) & set(demo.harmful_eval)
    specs = resolve_prompt_specs(Settings(model="org/model"))
    assert specs["harmful"] == "hub:mlabonne/harmful_behaviors:train[:400]:text"
    assert specs["harmless_eval"] == "hub:mlabonne/harmless_alpaca:test[:100]:text"


@pytest.fixture
def fake_datasets(monkeypatch, tmp_path):
    import io

    import huggingface_hub.constants as hf_constants
    from fakes.fake_datasets import FakeDatasets

    def parquet(rows: list[str]) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.table({"text": rows, "label": list(range(len(rows)))}), buffer)
        return buffer.getvalue()

    files = {
        "org/harmful": {
            "README.md": b"# card",
            "data/train-00000-of-00001.parquet": parquet([f"bad {i}" for i in range(10)]),
            "data/test-00000-of-00001.parquet": parquet(["held out 0", "held out 1"]),
        }
    }
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    with FakeDatasets(files) as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield fake


def test_hub_dataset_split_slice_and_column(fake_datasets) -> None:
    assert load_prompts("hub:org/harmful:train[:3]:text") == ["bad 0", "bad 1", "bad 2"]
    assert load_prompts("hub:org/harmful:train[8:]") == ["bad 8", "bad 9"]
    assert load_prompts("hub:org/harmful:test:text") == ["held out 0", "held out 1"]
    with pytest.raises(PromptSourceError) as err:
        load_prompts("hub:org/harmful:validation:text")
    assert "no data files for split 'validation'" in err.value.message
    with pytest.raises(PromptSourceError) as err:
        load_prompts("hub:org/missing:train:text")
    assert "org/missing" in err.value.message
