"""Cross-check with a second library: HF ``datasets`` (what TRL loads data with) reads our files and we read its."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from datasets import Dataset, load_dataset
from trl.data_utils import is_conversational

from system.data import load_preferences, write_preferences
from tests.system.test_data import CONVERSATIONAL, PLAIN


@pytest.mark.parametrize("pairs", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
@pytest.mark.parametrize(("builder", "suffix"), [("json", "jsonl"), ("parquet", "parquet")])
def test_datasets_reads_what_we_write(tmp_path: Path, pairs: list, builder: str, suffix: str) -> None:
    path = tmp_path / f"pairs.{suffix}"
    write_preferences(path, pairs)
    dataset = load_dataset(builder, data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert dataset.column_names == ["prompt", "chosen", "rejected", "score_chosen", "score_rejected", "pair_id"]
    assert dataset.to_list() == [asdict(pair) for pair in pairs]
    assert is_conversational(dataset[0]) == isinstance(pairs[0].prompt, list)


@pytest.mark.parametrize("pairs", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_we_read_what_datasets_writes(tmp_path: Path, pairs: list) -> None:
    dataset = Dataset.from_list([asdict(pair) for pair in pairs])
    dataset.to_json(tmp_path / "pairs.jsonl")
    dataset.to_parquet(tmp_path / "pairs.parquet")
    assert load_preferences(tmp_path / "pairs.jsonl") == pairs
    assert load_preferences(tmp_path / "pairs.parquet") == pairs
