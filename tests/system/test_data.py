"""Preference/prompt datasets: round trips, streaming, one-line errors naming file/row/field, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from system import data
from system.data import (
    load_preferences,
    read_preferences,
    read_prompts,
    read_rows,
    write_preferences,
    write_prompts,
    write_rows,
)
from system.errors import DataError
from system.types import PreferencePair, PromptRecord

PLAIN = [
    PreferencePair("What is 2+2?", "4", "5", score_chosen=1.5, score_rejected=-0.25, pair_id="a"),
    PreferencePair("Say hi ✓", "hi", "no", pair_id="b"),
    PreferencePair("Quote: \"x\"\nnext", "line1\nline2", "ok", score_chosen=0.0, score_rejected=3.0),
]
CONVERSATIONAL = [
    PreferencePair(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
        [{"role": "assistant", "content": "Paris."}],
        [{"role": "assistant", "content": "Lyon."}],
        score_chosen=0.9,
        score_rejected=0.1,
        pair_id="c1",
    ),
    PreferencePair(
        [{"role": "user", "content": "2+2?"}],
        [{"role": "assistant", "content": "4"}],
        [{"role": "assistant", "content": ""}, {"role": "assistant", "content": "5"}],
    ),
]


@pytest.mark.parametrize("pairs", [PLAIN, CONVERSATIONAL], ids=["plain", "conversational"])
def test_round_trip_jsonl_parquet_jsonl(tmp_path: Path, pairs: list[PreferencePair]) -> None:
    assert write_preferences(tmp_path / "a.jsonl", pairs) == len(pairs)
    assert load_preferences(tmp_path / "a.jsonl") == pairs
    write_preferences(tmp_path / "b.parquet", read_preferences(tmp_path / "a.jsonl"))
    assert load_preferences(tmp_path / "b.parquet") == pairs
    write_preferences(tmp_path / "c.jsonl", read_preferences(tmp_path / "b.parquet"))
    assert (tmp_path / "c.jsonl").read_bytes() == (tmp_path / "a.jsonl").read_bytes()


def test_reading_is_streamed_and_row_numbers_span_parquet_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data, "PARQUET_BATCH_ROWS", 3)
    rows = [{"prompt": f"p{i}", "chosen": "c", "rejected": "r"} for i in range(10)]
    rows[6]["chosen"] = ""
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    stream = read_preferences(path)
    assert [next(stream).prompt for _ in range(6)] == [f"p{i}" for i in range(6)]  # lazily, before the bad row
    with pytest.raises(DataError) as err:
        next(stream)
    assert str(err.value) == f"{path}: row 7: field 'chosen': empty"


def test_multi_batch_parquet_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "PARQUET_BATCH_ROWS", 2)
    pairs = [PreferencePair(f"p{i}", f"c{i}", f"r{i}", score_chosen=float(i)) for i in range(7)]
    write_preferences(tmp_path / "m.parquet", pairs)
    assert load_preferences(tmp_path / "m.parquet") == pairs
    assert pq.ParquetFile(tmp_path / "m.parquet").metadata.num_row_groups == 4


def test_empty_files_round_trip(tmp_path: Path) -> None:
    for name in ("e.jsonl", "e.parquet"):
        assert write_preferences(tmp_path / name, []) == 0
        assert load_preferences(tmp_path / name) == []


# ---------------------------------------------------------------- prompts


def test_prompt_ids_generated_stably_and_kept_when_given(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "hello"}, {"prompt": "world", "prompt_id": 17}, {"prompt": "hello"},
             {"prompt": [{"role": "user", "content": "hi"}], "chosen": "ignored"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    records = read_prompts(path)
    assert records[1] == PromptRecord("world", "17")
    assert records[0].prompt_id.startswith("p-") and len(records[0].prompt_id) == 18
    assert records[2].prompt_id == records[0].prompt_id + "-2"
    assert len({r.prompt_id for r in records}) == 4
    # stable: same ids from a reordered file for the distinct prompts
    path.write_text("".join(json.dumps(line) + "\n" for line in reversed(lines)))
    again = {r.prompt_id for r in read_prompts(path)}
    assert records[0].prompt_id in again and records[3].prompt_id in again
    # round trip through Parquet keeps ids; one text form per written file
    with pytest.raises(DataError, match=r"prompts\.parquet: row 4: field 'prompt': plain and conversational rows"):
        write_prompts(tmp_path / "prompts.parquet", records)
    for name in ("plain.parquet", "plain.jsonl"):
        write_prompts(tmp_path / name, records[:3])
        assert read_prompts(tmp_path / name) == records[:3]
    write_prompts(tmp_path / "chat.parquet", records[3:])
    assert read_prompts(tmp_path / "chat.parquet") == records[3:]


# ---------------------------------------------------------------- bad input: one line naming file/row/field


def _jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = json.dumps({"prompt": "p", "chosen": "c", "rejected": "r"})
BAD_JSONL = [
    ("missing column", [GOOD, '{"prompt": "p", "rejected": "r"}'], "row 2: field 'chosen': missing"),
    ("empty chosen", ['{"prompt": "p", "chosen": "  ", "rejected": "r"}'], "row 1: field 'chosen': empty"),
    ("empty rejected conversation",
     ['{"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], '
      '"rejected": []}'], "row 1: field 'rejected': empty"),
    ("null chosen", ['{"prompt": "p", "chosen": null, "rejected": "r"}'], "row 1: field 'chosen': missing"),
    ("nan score", [GOOD, GOOD, '{"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": NaN}'],
     "row 3: field 'score_chosen': not a finite number (nan)"),
    ("inf score", ['{"prompt": "p", "chosen": "c", "rejected": "r", "score_rejected": -Infinity}'],
     "row 1: field 'score_rejected': not a finite number (-inf)"),
    ("string score", ['{"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": "0.5"}'],
     "row 1: field 'score_chosen': expected a number, got str"),
    ("wrong type", ['{"prompt": "p", "chosen": 5, "rejected": "r"}'],
     "row 1: field 'chosen': expected a string or a list of {role, content} messages, got int"),
    ("message without role",
     ['{"prompt": [{"content": "q"}], "chosen": [{"role": "assistant", "content": "a"}], '
      '"rejected": [{"role": "assistant", "content": "b"}]}'], "row 1: field 'prompt': message 1: missing 'role'"),
    ("mixed forms", ['{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "r"}'],
     "row 1: field 'chosen': is a conversation but 'prompt' is not; use one form for prompt, chosen and rejected"),
    ("invalid json line", [GOOD, "", '{"prompt": "p", "chosen": "c" "rejected": "r"}'],
     "row 3: invalid JSON: Expecting ',' delimiter (column 31)"),
    ("not an object", [GOOD, "[1, 2]"], "row 2: expected a JSON object, got list"),
    ("bool pair id", ['{"prompt": "p", "chosen": "c", "rejected": "r", "pair_id": true}'],
     "row 1: field 'pair_id': expected a string, got bool"),
]


@pytest.mark.parametrize(("lines", "expected"), [case[1:] for case in BAD_JSONL], ids=[c[0] for c in BAD_JSONL])
def test_bad_jsonl_rows(tmp_path: Path, lines: list[str], expected: str) -> None:
    path = _jsonl(tmp_path / "pairs.jsonl", lines)
    with pytest.raises(DataError) as err:
        load_preferences(path)
    assert str(err.value) == f"{path}: {expected}"
    assert "\n" not in str(err.value)


BAD_PARQUET = [
    ("missing column", [{"prompt": "p", "chosen": "c"}], "row 1: field 'rejected': missing"),
    ("inf score", [{"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": 1.0},
                   {"prompt": "p", "chosen": "c", "rejected": "r", "score_chosen": float("inf")}],
     "row 2: field 'score_chosen': not a finite number (inf)"),
    ("empty rejected", [{"prompt": "p", "chosen": "c", "rejected": ""}], "row 1: field 'rejected': empty"),
    ("numeric prompt", [{"prompt": 3, "chosen": "c", "rejected": "r"}],
     "row 1: field 'prompt': expected a string or a list of {role, content} messages, got int"),
]


@pytest.mark.parametrize(("rows", "expected"), [case[1:] for case in BAD_PARQUET], ids=[c[0] for c in BAD_PARQUET])
def test_bad_parquet_rows(tmp_path: Path, rows: list[dict[str, object]], expected: str) -> None:
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as err:
        load_preferences(path)
    assert str(err.value) == f"{path}: {expected}"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"pairs\.csv: unsupported file type '\.csv'; use \.jsonl or \.parquet"):
        load_preferences(tmp_path / "pairs.csv")
    with pytest.raises(DataError, match=r"nope\.jsonl: no such file"):
        load_preferences(tmp_path / "nope.jsonl")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        load_preferences(tmp_path / "junk.parquet")
    (tmp_path / "latin1.jsonl").write_bytes(GOOD.encode() + b"\n" + '{"prompt": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.jsonl: row 2: not UTF-8 text"):
        load_preferences(tmp_path / "latin1.jsonl")


def test_bad_prompts(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "prompts.jsonl", ['{"prompt": "a", "prompt_id": "x"}', '{"prompt": "b"}',
                                               '{"prompt": "c", "prompt_id": "x"}'])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    assert str(err.value) == f"{path}: row 3: field 'prompt_id': duplicate 'x' (first at row 1)"
    path = _jsonl(tmp_path / "prompts.jsonl", ['{"text": "a"}'])
    with pytest.raises(DataError) as err:
        read_prompts(path)
    assert str(err.value) == f"{path}: row 1: field 'prompt': missing"


# ---------------------------------------------------------------- atomic writes


def _pairs_then_crash(n: int) -> Iterator[PreferencePair]:
    for i in range(n):
        yield PreferencePair(f"p{i}", "c", "r")
    raise OSError("writer died")


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.parquet"])
def test_crash_mid_write_leaves_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(data, "PARQUET_BATCH_ROWS", 4)  # the Parquet writer has flushed batches before the crash
    path = tmp_path / name
    write_preferences(path, PLAIN)
    with pytest.raises(OSError, match="writer died"):
        write_preferences(path, _pairs_then_crash(10))
    assert load_preferences(path) == PLAIN
    assert [p.name for p in tmp_path.iterdir()] == [name]
    # a bad record mid-stream is a DataError naming the output row, and the old file stays
    bad = [PreferencePair("p", "c", "r")] * 5 + [PreferencePair("p", "", "r")]
    with pytest.raises(DataError) as err:
        write_preferences(path, bad)
    assert str(err.value) == f"{path}: row 6: field 'chosen': empty"
    assert load_preferences(path) == PLAIN
    # mixing plain and conversational rows in one file is refused
    with pytest.raises(DataError, match="row 2: field 'prompt': plain and conversational rows mixed"):
        write_preferences(path, [PLAIN[0], CONVERSATIONAL[0]])
    assert [p.name for p in tmp_path.iterdir()] == [name]


# ---------------------------------------------------------------- generic rows


def test_generic_rows_round_trip(tmp_path: Path) -> None:
    rows = [{"pair_id": "a", "phi": [0.5, -1.0], "meta": {"round": 1}}, {"pair_id": "b", "phi": [2.0], "meta": None}]
    for name in ("rows.jsonl", "rows.parquet"):
        assert write_rows(tmp_path / name, rows) == 2
        assert list(read_rows(tmp_path / name)) == rows
    with pytest.raises(DataError, match=r"rows\.jsonl: row 1: cannot be written as JSON"):
        write_rows(tmp_path / "rows.jsonl", [{"x": float("nan")}])
    schema = pa.schema([("x", pa.float64())])
    write_rows(tmp_path / "typed.parquet", [{"x": None}, {"x": 1.0}], schema=schema)
    assert pq.read_schema(tmp_path / "typed.parquet").field("x").type == pa.float64()
    with pytest.raises(DataError, match=r"bad\.parquet: rows 1-2: do not fit the Parquet schema"):
        write_rows(tmp_path / "bad.parquet", [{"x": 1.0}, {"x": "text"}], schema=schema)
