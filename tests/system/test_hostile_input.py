"""Hostile files at every loader: malformed JSONL/Parquet, wrong types, NaN/inf, invalid UTF-8, duplicate ids,
missing columns. Each must raise DataError with ONE line naming the file, the 1-based row and the field."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from system.config import load_config
from system.data import read_preferences, read_prompts, read_rows
from system.errors import ConfigError, DataError
from system.labels import LabelStore
from system.labels.formats import export_labels, import_labels
from system.report import load_run, write_report
from system.selection.offline import load_pool
from system.types import CandidatePair, Label
from tests.hostile import HOSTILE_IDS

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_ROW = {"prompt": "Say hi.", "chosen": "hi", "rejected": "no", "pair_id": "p1"}
GOOD_POOL_ROW = {"pair_id": "a", "phi": [1.0, 0.5]}


def load_all_preferences(path: Path) -> Any:
    return list(read_preferences(path))


def load_all_pool(path: Path) -> Any:
    pool = load_pool(path)
    return pool.numeric_features() if "phi" in pool.rows[0] else pool.candidate_pairs()


LOADERS: dict[str, Callable[[Path], Any]] = {
    "preferences": load_all_preferences,
    "prompts": read_prompts,
    "pool": load_all_pool,
    "rows": lambda path: list(read_rows(path)),
}


def refused(loader: Callable[[Path], Any], path: Path) -> str:
    """The one-line message ``loader`` raises for ``path`` (fails the test when it raises anything else)."""
    with pytest.raises(DataError) as error:
        loader(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# ---------------------------------------------------------------- any bytes: loaded or one DataError line


@FAST
@given(content=st.binary(max_size=300), loader=st.sampled_from(sorted(LOADERS)),
       suffix=st.sampled_from([".jsonl", ".parquet"]))
def test_arbitrary_bytes_load_or_fail_with_one_line(tmp_path: Path, content: bytes, loader: str, suffix: str) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_bytes(content)
    try:
        LOADERS[loader](path)
    except DataError as error:
        assert "\n" not in str(error) and str(error).startswith(f"{path}: ")


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=8)


@FAST
@given(lines=st.lists(json_values | st.text(max_size=20), min_size=1, max_size=6),
       loader=st.sampled_from(sorted(LOADERS)))
def test_any_jsonl_lines_load_or_name_the_line(tmp_path: Path, lines: list[Any], loader: str) -> None:
    """Broken lines and non-object lines are refused with the line number where the first one sits."""
    path = tmp_path / "input.jsonl"
    rendered = [line if isinstance(line, str) else json.dumps(line) for line in lines]
    path.write_text("\n".join(rendered) + "\n")
    try:
        LOADERS[loader](path)
    except DataError as error:
        message = str(error)
        assert "\n" not in message and message.startswith(f"{path}: ")
        if "row" in message:
            row = int(re.search(r": rows? (\d+)", message).group(1))
            assert 1 <= row <= len(lines)


# ---------------------------------------------------------------- one bad field in a good file


def bad_values() -> st.SearchStrategy[Any]:
    return st.sampled_from([None, 5, 2.5, True, [], {}, [1], "", "   ", "\ud800", [{"role": "user"}],
                            [{"role": "", "content": "x"}], [{"role": "user", "content": 3}]])


@FAST
@given(rows_before=st.integers(0, 3), field=st.sampled_from(["prompt", "chosen", "rejected"]), value=bad_values(),
       blank_lines=st.integers(0, 2), suffix=st.sampled_from([".jsonl", ".parquet"]))
def test_bad_text_field_names_file_row_and_field(
    tmp_path: Path, rows_before: int, field: str, value: Any, blank_lines: int, suffix: str
) -> None:
    rows = [{**GOOD_ROW, "pair_id": f"p{i}"} for i in range(rows_before)]
    bad = {**GOOD_ROW, "pair_id": "bad"}
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        lines = [json.dumps(row) for row in rows] + [""] * blank_lines + [json.dumps(bad)]
        path.write_text("\n".join(lines) + "\n")
        expected_row = rows_before + blank_lines + 1
    else:
        try:
            pq.write_table(pa.Table.from_pylist([*rows, bad]), path)
        except (pa.ArrowException, UnicodeEncodeError):
            return  # Arrow cannot hold this mix of types or text; the JSONL case covers it
        expected_row = rows_before + 1
    message = refused(load_all_preferences, path)
    assert f": row {expected_row}: field {field!r}: " in message


@FAST
@given(value=st.sampled_from([float("nan"), float("inf"), -float("inf"), "1.0", [1.0], True, 10**400]),
       field=st.sampled_from(["score_chosen", "score_rejected"]))
def test_nan_inf_and_non_numeric_scores_are_refused(tmp_path: Path, value: Any, field: str) -> None:
    path = tmp_path / "pairs.jsonl"
    rendered = json.dumps({**GOOD_ROW, field: "PLACEHOLDER"}).replace('"PLACEHOLDER"', json.dumps(value))
    path.write_text(json.dumps(GOOD_ROW | {"pair_id": "p0"}) + "\n" + rendered + "\n")
    message = refused(load_all_preferences, path)
    assert f": row 2: field {field!r}: " in message


@FAST
@given(first=st.integers(1, 4), gap=st.integers(1, 3), pair_id=st.text(min_size=1, max_size=8).filter(str.strip)
       .filter(lambda text: "\x00" not in text))
def test_duplicate_pair_ids_name_both_rows(tmp_path: Path, first: int, gap: int, pair_id: str) -> None:
    rows = [{**GOOD_ROW, "pair_id": f"other-{i}"} for i in range(first + gap)]
    rows[first - 1]["pair_id"] = rows[first + gap - 1]["pair_id"] = pair_id
    for loader, file_rows in (
        (load_all_preferences, rows),
        (load_all_pool, [{**GOOD_POOL_ROW, "pair_id": row["pair_id"]} for row in rows]),
        (read_prompts, [{"prompt": "x", "prompt_id": row["pair_id"]} for row in rows]),
    ):
        path = write_jsonl(tmp_path / "dup.jsonl", file_rows)
        message = refused(loader, path)
        field = "prompt_id" if loader is read_prompts else "pair_id"
        assert f": row {first + gap}: field {field!r}: duplicate {pair_id!r} (first at row {first})" in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a\xff\xfe"}\n', "row 2: not UTF-8 text"),
        (b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": \n', "row 2: invalid JSON"),
        (b'\n\n[1, 2]\n', "row 3: expected a JSON object, got list"),
        (b'"just a string"\n', "row 1: expected a JSON object, got str"),
        (b"[" * 100_000 + b"\n", "row 1: invalid JSON: nested too deeply"),
        (b'{"prompt": "\\ud800", "chosen": "b", "rejected": "c"}\n', "row 1: field 'prompt': not valid Unicode"),
        (b'{"prompt": "a", "chosen": "b", "rejected": "c", "pair_id": "x\\u0000y"}\n',
         "row 1: field 'pair_id': contains a NUL"),
    ],
)
def test_broken_jsonl_lines_are_named(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(content)
    assert problem in refused(load_all_preferences, path)


def test_wrong_parquet_schema_and_garbage_bytes(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": ["x", "y"], "rejected": [1, 2]}), wrong)
    assert ": row 1: field 'rejected': expected a string or a list" in refused(load_all_preferences, wrong)
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({"prompt": ["a"], "chosen": ["x"]}), missing)
    assert ": row 1: field 'rejected': missing" in refused(load_all_preferences, missing)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    assert "not a readable Parquet file" in refused(load_all_preferences, garbage)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(wrong.read_bytes()[: len(wrong.read_bytes()) // 2])
    refused(load_all_preferences, truncated)


def test_empty_and_huge_texts(tmp_path: Path) -> None:
    huge = "word " * 200_000  # 1 MB prompt: loaded as is (truncation is the tokenizer's job)
    path = write_jsonl(tmp_path / "huge.jsonl", [{**GOOD_ROW, "prompt": huge}])
    assert load_all_preferences(path)[0].prompt == huge
    empty = write_jsonl(tmp_path / "empty.jsonl", [GOOD_ROW, {**GOOD_ROW, "pair_id": "p2", "chosen": " \n\t"}])
    assert ": row 2: field 'chosen': empty" in refused(load_all_preferences, empty)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"prompt": ""}])
    assert ": row 2: field 'prompt': empty" in refused(read_prompts, prompts)


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"pair_id": "a", "phi": []}, "field 'phi': expected a non-empty list of numbers"),
        ({"pair_id": "a", "phi": [True, 1.0]}, "field 'phi': expected a non-empty list of numbers"),
        ({"pair_id": "a", "phi": "1,2"}, "field 'phi': expected a non-empty list of numbers"),
        ({"pair_id": {"x": 1}, "phi": [1.0]}, "field 'pair_id': expected a string"),
        ({"pair_id": "a", "prompt": "p", "response_1": 5, "response_2": "r"}, "field 'response_1': expected a string"),
        ({"pair_id": "a", "prompt": "p", "response_1": "  ", "response_2": "r"}, "field 'response_1': empty"),
        ({"pair_id": "a", "prompt": "p", "response_2": "r"}, "field 'response_1': missing"),
    ],
)
def test_bad_pool_rows_name_the_line(tmp_path: Path, row: dict[str, Any], problem: str) -> None:
    path = tmp_path / "pool.jsonl"
    first = {"pair_id": "z", "phi": [1.0, 2.0]} if "phi" in row else {
        "pair_id": "z", "prompt": "p", "response_1": "a", "response_2": "b"}
    path.write_text(json.dumps(first) + "\n\n" + json.dumps(row) + "\n")
    assert f": row 3: {problem}" in refused(load_all_pool, path)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    assert "no such file" in refused(load_all_preferences, tmp_path / "absent.jsonl")
    assert "unsupported file type '.csv'" in refused(load_all_preferences, tmp_path / "pairs.csv")
    assert "the pool is empty" in refused(load_all_pool, write_jsonl(tmp_path / "empty.jsonl", []))


# ---------------------------------------------------------------- label imports (Label Studio, Argilla, TRL)


def _store_with_one_label(path: Path) -> LabelStore:
    store = LabelStore(f"sqlite:///{path}")
    pair = CandidatePair("kept", "", "p", "a", "b")
    store.put([Label("kept", 1, 0.9, "programmatic")], [pair], round=0)
    return store


label_studio_tasks = st.lists(
    st.fixed_dictionaries({}, optional={
        "data": st.fixed_dictionaries({}, optional={"prompt": json_values, "response_1": json_values,
                                                    "response_2": json_values, "pair_id": json_values,
                                                    "round": json_values}) | json_values,
        "annotations": st.lists(st.fixed_dictionaries({}, optional={
            "result": st.just([{"from_name": "preferred", "value": {"choices": ["response_2"]}}]) | json_values,
            "activealign": st.fixed_dictionaries({}, optional={
                "prob_1": json_values, "round": json_values, "oracle": json_values}) | json_values,
        }) | json_values, max_size=2) | json_values,
    }) | json_values,
    max_size=3,
)


@FAST
@given(tasks=label_studio_tasks)
def test_label_studio_import_loads_or_names_the_task_and_writes_nothing(tmp_path: Path, tasks: list[Any]) -> None:
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    with _store_with_one_label(tmp_path / f"labels-{uuid.uuid4().hex}.db") as store:
        try:
            import_labels(store, path, "label-studio")
        except DataError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(f"{path}: ")
            assert [record.pair_id for record in store.labels()] == ["kept"]
        else:
            assert all(0 <= record.prob_1 <= 1 and record.round >= 0 for record in store.labels())


argilla_rows = st.fixed_dictionaries({}, optional={
    "fields": st.fixed_dictionaries({}, optional={"prompt": json_values, "response_1": json_values,
                                                  "response_2": json_values}) | json_values,
    "metadata": st.fixed_dictionaries({}, optional={"prob_1": json_values, "round": json_values,
                                                    "pair_id": json_values, "annotator": json_values}) | json_values,
    "responses": st.just({"preferred": [{"value": "1", "user_id": "u"}]}) | json_values,
    "suggestions": st.just({"preferred": {"value": "2", "agent": "m"}}) | json_values,
})


@FAST
@given(rows=st.lists(argilla_rows, min_size=1, max_size=3))
def test_argilla_import_loads_or_names_the_line_and_writes_nothing(tmp_path: Path, rows: list[Any]) -> None:
    path = write_jsonl(tmp_path / "records.jsonl", rows)
    with _store_with_one_label(tmp_path / f"labels-{uuid.uuid4().hex}.db") as store:
        try:
            import_labels(store, path, "argilla")
        except DataError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(f"{path}: ")
            row = re.search(r": row (\d+)", message)
            assert row is None or 1 <= int(row.group(1)) <= len(rows)
            assert [record.pair_id for record in store.labels()] == ["kept"]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"fields": {"prompt": "p", "response_1": "a", "response_2": "b"}, "metadata": {"prob_1": float("nan")},
          "suggestions": {"preferred": {"value": "1"}}}, "row 2: field 'prob_1': not a finite number"),
        ({"fields": {"prompt": "p", "response_1": "a", "response_2": "b"}, "metadata": {"prob_1": 1.5},
          "suggestions": {"preferred": {"value": "1"}}}, "row 2: field 'prob_1': 1.5 is not a probability"),
        ({"fields": {"prompt": "p", "response_1": "a", "response_2": "b"}, "metadata": {"round": "3"},
          "suggestions": {"preferred": {"value": "1"}}}, "row 2: field 'round': expected a non-negative integer"),
        ({"fields": ["p"], "suggestions": {"preferred": {"value": "1"}}}, "row 2: field 'fields': expected a JSON"),
        ({"fields": {"prompt": "p", "response_1": 3, "response_2": "b"}, "suggestions": {"preferred": {"value": "1"}}},
         "row 2: field 'response_1': expected a non-empty string"),
        ({"fields": {"prompt": "p", "response_1": "a", "response_2": "b"}, "suggestions": {"preferred": "1"}},
         "row 2: no 'preferred' answer"),
    ],
)
def test_bad_argilla_records_are_named(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    good = {"fields": {"prompt": "q", "response_1": "x", "response_2": "y"},
            "suggestions": {"preferred": {"value": "2"}}}
    path = tmp_path / "records.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with _store_with_one_label(tmp_path / "labels.db") as store:
        with pytest.raises(DataError, match=re.escape(problem)):
            import_labels(store, path, "argilla")
        assert len(store.labels()) == 1  # the good first record was not written either


# ---------------------------------------------------------------- run directories read by `report`


@pytest.mark.parametrize(
    ("config", "metrics", "problem"),
    [
        ("selection: [", '{"labels": 0}', "config.yaml: not a readable config"),
        ("- a list", '{"labels": 0}', "config.yaml: selection.strategy: expected a string, got None"),
        ("selection: {strategy: adpo}\ntrain: {loss: dpo}\nloop: {seed: x}", '{"labels": 0}',
         "config.yaml: loop.seed: expected an integer, got 'x'"),
        (None, "{not json", "metrics.json: not readable JSON"),
        (None, "[1, 2]", "metrics.json: expected a JSON object of metrics, got list"),
        (None, '{"labels": "many"}', "metrics.json: field 'labels': expected a number, got str"),
        (None, b'{"labels": "\xff"}', "metrics.json: not readable JSON"),
    ],
)
def test_report_names_the_broken_run_file(tmp_path: Path, config: str | None, metrics: str | bytes,
                                          problem: str) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "round_000").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(config or "selection: {strategy: adpo}\ntrain: {loss: dpo}\nloop: {seed: 1}")
    metrics_path = run_dir / "round_000" / "metrics.json"
    metrics_path.write_bytes(metrics if isinstance(metrics, bytes) else metrics.encode())
    with pytest.raises(DataError) as error:
        load_run(run_dir)
    assert problem in str(error.value) and "\n" not in str(error.value)


# ---------------------------------------------------------------- ids from requests and files


def test_hostile_ids_are_stored_as_data_and_exported_intact(tmp_path: Path) -> None:
    """Pair ids, annotators and oracle names are bound as query parameters, never spliced into SQL or paths."""
    pairs = [CandidatePair(pair_id, "", f"prompt {index}", "a", "b") for index, pair_id in enumerate(HOSTILE_IDS)]
    labels = [Label(pair.pair_id, 1, 0.75, "x'; DROP TABLE labels; --", annotator=pair.pair_id) for pair in pairs]
    out = tmp_path / "labels.jsonl"
    with LabelStore(f"sqlite:///{tmp_path / 'labels.db'}") as store:
        assert store.put(labels, pairs, round=0) == len(HOSTILE_IDS)
        assert [record.pair_id for record in store.labels()] == list(HOSTILE_IDS)
        found = store.find([(pair_id, "x'; DROP TABLE labels; --", pair_id) for pair_id in HOSTILE_IDS])
        assert [record.annotator for record in found] == list(HOSTILE_IDS)
        out.write_text("previous export\n")
        with pytest.raises(DataError, match="writes a .parquet file"):
            export_labels(store, out, "trl-parquet")
        assert out.read_text() == "previous export\n"  # a refused export leaves the old file alone
        with pytest.raises(DataError, match=r": row 4: field 'pair_id': contains a NUL"):
            export_labels(store, out, "trl-jsonl")  # "a\x00b" is refused by the writer's own row check
        assert out.read_text() == "previous export\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["labels.db", "labels.jsonl"]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b'model:\n  path: "caf\xe9"\n', "not UTF-8 text (byte 19: invalid continuation byte)"),
        (b"model: [\n", "line 2 invalid YAML"),
        (b"- just\n- a list\n", "top level must be a mapping of sections"),
        (b"loop: {rounds: .nan}\n", "loop.rounds"),
    ],
)
def test_bad_config_files_are_one_config_error(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(str(path)) and problem in str(error.value) and "\n" not in str(error.value)


def test_report_refuses_an_output_that_is_a_file(tmp_path: Path) -> None:
    out = tmp_path / "report"
    out.write_text("not a directory")
    with pytest.raises(DataError, match=re.escape(f"--out {out}: exists and is not a directory")):
        write_report([tmp_path / "no-run"], out)
    assert out.read_text() == "not a directory"
