"""Datasets named where a file path goes (``hf:NAME?split=…&columns=…``), read through ``datasets.load_dataset`` with
``HF_HUB_OFFLINE=1``: a dataset repository laid out on disk (data files and a README card whose ``configs:`` YAML
names the splits, as on the hub) reads like a hub repository, and its rows get the same checks as a file's."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from system.data import DatasetRef, load_preferences, read_preferences, read_prompts, write_preferences
from system.errors import DataError
from system.selection.offline import load_pool
from system.types import PreferencePair

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs.jsonl
  - split: test_prefs
    path: data/test_prefs.jsonl
---
# A preference dataset in the hub's layout
"""
ROWS = [
    {"question": "Name a pet.", "better": "A cat.", "worse": "Rocks.", "prompt": "ignored"},
    {"question": "Name a bird.", "better": "A robin.", "worse": "A bee.", "prompt": "ignored"},
]
CONVERSATION = {"question": [{"role": "user", "content": "Hi?"}],
                "better": [{"role": "assistant", "content": "Hello."}],
                "worse": [{"role": "assistant", "content": "No."}]}
COLUMNS = "columns=question:prompt,better:chosen,worse:rejected"


def write_repo(root: Path, train: list[dict], test: list[dict] | None = None) -> Path:
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text(CARD)
    for split, rows in (("train_prefs", train), ("test_prefs", test or train[:1])):
        (root / "data" / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_dataset_by_name_reads_like_the_file_with_the_same_rows(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", ROWS)
    chat = write_repo(tmp_path / "chat", [CONVERSATION])
    expected = [PreferencePair(prompt=row["question"], chosen=row["better"], rejected=row["worse"]) for row in ROWS]
    write_preferences(tmp_path / "pairs.jsonl", expected)
    assert load_preferences(f"hf:{repo}?split=train_prefs&{COLUMNS}") == load_preferences(tmp_path / "pairs.jsonl")
    assert load_preferences(f"hf:{chat}?split=test_prefs&{COLUMNS}") == [PreferencePair(
        prompt=CONVERSATION["question"], chosen=CONVERSATION["better"], rejected=CONVERSATION["worse"])]
    prompts = read_prompts(f"hf:{repo}?split=train_prefs&columns=question:prompt")
    assert [record.prompt for record in prompts] == [expected[0].prompt, expected[1].prompt]
    assert prompts == read_prompts(tmp_path / "pairs.jsonl")  # ids from content: the same wherever rows come from


def test_a_bad_row_of_a_dataset_is_named_like_a_bad_line_of_a_file(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", [ROWS[0], {**ROWS[0], "better": "  "}])
    source = f"hf:{repo}?split=train_prefs&{COLUMNS}"
    with pytest.raises(DataError) as raised:
        list(read_preferences(source))
    assert str(raised.value) == f"{source}: row 2: field 'chosen': empty"


@pytest.mark.parametrize(("query", "problem"), [
    ("split=validation", "cannot load the dataset: "),
    ("split=train_prefs&columns=question:prompt,nope:chosen", "columns ['nope'] not in the dataset"),
    ("split=train_prefs&columns=question", "columns='question': write SOURCE:TARGET"),
    ("split=train_prefs&shuffle=1", "options are split, revision, config, columns, each once"),
])
def test_a_dataset_that_cannot_be_read_stops_with_one_line_naming_it(tmp_path: Path, query: str,
                                                                     problem: str) -> None:
    source = f"hf:{write_repo(tmp_path / 'repo', ROWS)}?{query}"
    with pytest.raises(DataError) as raised:
        load_preferences(source)
    message = str(raised.value)
    assert message.startswith(f"{source}: {problem}") and "\n" not in message


def test_a_hub_id_offline_and_not_cached_is_one_line() -> None:
    source = "hf:activealign-missing/none?split=train"
    with pytest.raises(DataError) as raised:
        load_preferences(source)
    assert str(raised.value).startswith(f"{source}: cannot load the dataset: ") and "\n" not in str(raised.value)


def test_a_pool_can_be_a_dataset(tmp_path: Path) -> None:
    rows = [{"pair_id": f"p{i}", "phi": [float(i), 1.0], "label": i % 2} for i in range(4)]
    pool = load_pool(f"hf:{write_repo(tmp_path / 'repo', rows)}?split=train_prefs")
    assert pool.pair_ids == ["p0", "p1", "p2", "p3"] and pool.numeric_features().tolist()[3] == [3.0, 1.0]


def test_the_reference_is_parsed_into_what_load_dataset_gets() -> None:
    ref = DatasetRef.parse("hf:HuggingFaceH4/ultrafeedback_binarized?split=train_prefs&revision=main&config=default"
                           "&columns=messages:prompt")
    assert (ref.name, ref.split, ref.revision, ref.config, ref.columns) == (
        "HuggingFaceH4/ultrafeedback_binarized", "train_prefs", "main", "default", (("messages", "prompt"),))
    assert DatasetRef.parse("hf:a/b").split == "train"


def test_an_edited_repository_on_disk_is_read_afresh(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", ROWS)
    source = f"hf:{repo}?split=train_prefs&{COLUMNS}"
    assert [pair.chosen for pair in load_preferences(source)] == ["A cat.", "A robin."]
    (repo / "data" / "train_prefs.jsonl").write_text(json.dumps({**ROWS[0], "better": "A dog."}) + "\n")
    assert [pair.chosen for pair in load_preferences(source)] == ["A dog."]
