"""Preference and prompt datasets in TRL's format, read and written as JSONL or Parquet, streamed, or read from a
Hugging Face dataset named where a file path goes.

Preference rows have columns ``prompt``, ``chosen``, ``rejected`` (each plain text, or a conversation: a list
of ``{"role", "content"}`` messages, the same form in all three), optional ``score_chosen``/``score_rejected``
(finite numbers) and optional ``pair_id``; other columns are ignored. Prompt rows have ``prompt`` and an
optional ``prompt_id``; missing ids are derived from the prompt's content, so they are stable across runs.

A source is a file or a dataset: ``hf:NAME[?split=S&revision=R&config=C&columns=SRC:DST,…]`` loads ``NAME`` (a hub
id such as ``HuggingFaceH4/ultrafeedback_binarized``, or a dataset repository on disk) with
``datasets.load_dataset`` (split ``train`` unless named; offline, with ``HF_HUB_OFFLINE=1``, from the local cache),
renames the columns ``columns`` maps (``question:prompt`` reads ``question`` as ``prompt``) and numbers its rows
from 1. Its rows pass the same checks as a file's, and its errors name the source the same way.

The format of a file follows the suffix: ``.jsonl`` or ``.parquet``. Reading is streamed: Parquet record batch by record
batch (pyarrow), JSONL line by line. JSONL is parsed per line with :mod:`json` rather than ``pyarrow.json``
because pyarrow infers one Arrow type per column per block, so a file cannot mix plain and conversational
rows, and a bad line fails a whole block without its line number; per-line parsing names the exact line (rows
of a JSONL file are numbered by line, blank lines included) and costs one ``json.loads`` per row.
Messages keep their ``role`` and ``content`` only (other keys are dropped), which is what chat templates read.

Every malformed row raises :class:`~system.errors.DataError` with one line naming file, row and field, e.g.
``data/pairs.jsonl: row 7: field 'chosen': empty``. Writes are atomic (:mod:`system.fileio`) and validate
each record with the same parser that reads it, so whatever we write we can read back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import pyarrow as pa
import pyarrow.parquet as pq

from system.errors import DataError
from system.fileio import atomic_output
from system.types import Message, PreferencePair, PromptRecord, Text

Format = Literal["jsonl", "parquet"]
TEXT_FIELDS = ("prompt", "chosen", "rejected")
SCORE_FIELDS = ("score_chosen", "score_rejected")
PARQUET_BATCH_ROWS = 1024
SchemaFor = Callable[[Mapping[str, Any]], pa.Schema]
"""Builds the Parquet schema of a file from its first row (an empty mapping when there are no rows)."""
MESSAGE_TYPE = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))


class _FieldError(Exception):
    """A problem with one field of one row; turned into a DataError once the file and row are known."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field {field!r}: {problem}")


def _one_line(err: BaseException) -> str:
    """An exception's text on one line (Arrow's messages span several)."""
    return " ".join(str(err).split()) or type(err).__name__


def _data_error(path: Path | str, row: int, problem: str) -> DataError:
    return DataError(f"{path}: row {row}: {problem}")


def file_format(path: Path) -> Format:
    """``jsonl`` or ``parquet`` from the suffix; any other raises :class:`DataError` (check an output path with
    this before doing the work that fills it)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl or .parquet")


# ---------------------------------------------------------------- reading rows


MAX_JSONL_LINE_BYTES = 16 * 2**20
"""Longest JSONL row read (16 MiB): a longer line is refused as soon as its first 16 MiB are read, so no verb
spends minutes and gigabytes on one row no model could take."""


def _jsonl_lines(path: Path, handle: Any) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of an open JSONL file, refusing a line over :data:`MAX_JSONL_LINE_BYTES`."""
    line_number = 0
    while raw := handle.readline(MAX_JSONL_LINE_BYTES + 1):
        line_number += 1
        if len(raw) > MAX_JSONL_LINE_BYTES:
            raise _data_error(path, line_number, f"longer than {MAX_JSONL_LINE_BYTES // 2**20} MiB")
        yield line_number, raw


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open("rb")
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror})") from None
    with handle:
        for line_number, raw in _jsonl_lines(path, handle):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except UnicodeDecodeError as err:
                raise _data_error(path, line_number, f"not UTF-8 text ({err.reason})") from None
            except json.JSONDecodeError as err:
                raise _data_error(path, line_number, f"invalid JSON: {err.msg} (column {err.colno})") from None
            except RecursionError:
                raise _data_error(path, line_number, "invalid JSON: nested too deeply") from None
            if not isinstance(row, dict):
                raise _data_error(path, line_number, f"expected a JSON object, got {type(row).__name__}")
            yield line_number, row


def _iter_parquet(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file: {_one_line(err)}") from None
    row_number = 0
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)
    while True:
        try:
            batch = next(batches, None)
            rows = [] if batch is None else batch.to_pylist()
        except (pa.ArrowException, OSError, ValueError) as err:
            raise _data_error(path, row_number + 1, f"unreadable Parquet data: {_one_line(err)}") from None
        if batch is None:
            return
        for row in rows:
            row_number += 1
            yield row_number, row


# ---------------------------------------------------------------- datasets by name

DATASET_PREFIX = "hf:"
DATASET_OPTIONS = ("split", "revision", "config", "columns")


def is_dataset(source: str | Path) -> bool:
    """Whether ``source`` names a Hugging Face dataset (``hf:…``) rather than a file."""
    return str(source).startswith(DATASET_PREFIX)


def source_name(source: str | Path) -> Path | str:
    """How errors name ``source``: a dataset reference as written, a file as its path."""
    return str(source) if is_dataset(source) else Path(source)


@dataclass(frozen=True)
class DatasetRef:
    """``hf:NAME?split=S&revision=R&config=C&columns=SRC:DST,…`` parsed: what ``datasets.load_dataset`` is given."""

    source: str
    name: str
    split: str = "train"
    revision: str | None = None
    config: str | None = None
    columns: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, source: str) -> DatasetRef:
        """Raises :class:`DataError` for an empty name, an unknown or repeated option, or a malformed column map."""
        name, _, query = source.removeprefix(DATASET_PREFIX).partition("?")
        if not name.strip():
            raise DataError(f"{source}: no dataset name; write hf:OWNER/NAME[?split=...]")
        options = parse_qs(query, keep_blank_values=True)
        unknown = sorted(set(options) - set(DATASET_OPTIONS))
        if unknown or any(len(values) > 1 for values in options.values()):
            raise DataError(f"{source}: options are {', '.join(DATASET_OPTIONS)}, each once; got {query!r}")
        given = {key: values[0] for key, values in options.items()}
        columns = []
        for item in filter(None, given.pop("columns", "").split(",")):
            old, sep, new = item.partition(":")
            if not (sep and old and new):
                raise DataError(f"{source}: columns={item!r}: write SOURCE:TARGET, e.g. question:prompt")
            columns.append((old, new))
        return cls(source, name, **given, columns=tuple(columns))

    def _load(self, cache: str | None) -> Any:
        """The split as a memory-mapped ``datasets.Dataset``, prepared in ``cache`` (None: datasets' own cache)."""
        import datasets

        try:
            return datasets.load_dataset(self.name, self.config, split=self.split, revision=self.revision,
                                         cache_dir=cache)
        except Exception as err:  # noqa: BLE001 - datasets raises hub, file, value and connection errors alike
            cause: BaseException = err
            while cause.__cause__ is not None:  # "An error occurred while generating the dataset" wraps the reason
                cause = cause.__cause__
            reason = _one_line(err) if cause is err else f"{_one_line(err)}: {_one_line(cause)}"
            raise DataError(f"{self.source}: cannot load the dataset: {reason}") from None

    def rows(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """(row number from 1, row with the mapped columns renamed) of the split, streamed from its Arrow files.

        A repository on disk is prepared afresh in a temporary cache that lives while the rows are read: datasets'
        own cache keys a local repository by its layout, so an edited file could be served with old rows or schema.

        Raises:
            DataError: the dataset, its config, revision or split cannot be loaded (offline: not in the cache), or a
                mapped column is missing.
        """
        with contextlib.ExitStack() as stack:
            cache = (stack.enter_context(tempfile.TemporaryDirectory(prefix="activealign-dataset-"))
                     if Path(self.name).is_dir() else None)
            dataset = self._load(cache)
            missing = [old for old, _ in self.columns if old not in dataset.column_names]
            if missing:
                raise DataError(f"{self.source}: columns {missing} not in the dataset (it has {dataset.column_names})")
            renamed = dict(self.columns)
            for number, row in enumerate(dataset, start=1):
                yield number, {renamed.get(key, key): value for key, value in row.items()
                               if key in renamed or key not in renamed.values()}


# ---------------------------------------------------------------- reading sources


def read_numbered_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row) pairs of a file or a dataset (``hf:…``), streamed; row numbers are 1-based (JSONL: line
    numbers)."""
    if is_dataset(path):
        yield from DatasetRef.parse(str(path)).rows()
        return
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    yield from (_iter_jsonl(path) if fmt == "jsonl" else _iter_parquet(path))


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    """Stream the rows of a JSONL or Parquet file as dicts (no schema checks beyond 'one object per row')."""
    for _, row in read_numbered_rows(path):
        yield row


# ---------------------------------------------------------------- parsing fields


def _check_unicode(text: str, field: str) -> None:
    """Text must be encodable as UTF-8: a JSON escape like ``"\\ud800"`` decodes to a lone surrogate, which
    would fail later in a tokenizer or a Parquet writer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _FieldError(field, f"not valid Unicode text ({err.reason} at character {err.start})") from None


def _parse_message(value: object, field: str, index: int) -> Message:
    if not isinstance(value, Mapping):
        raise _FieldError(field, f"message {index}: expected an object with 'role' and 'content'")
    message: Message = {}
    for key in ("role", "content"):
        if key not in value or value[key] is None:
            raise _FieldError(field, f"message {index}: missing {key!r}")
        if not isinstance(value[key], str):
            raise _FieldError(field, f"message {index}: {key!r} must be a string, got {type(value[key]).__name__}")
        _check_unicode(value[key], field)
        message[key] = value[key]
    if not message["role"].strip():
        raise _FieldError(field, f"message {index}: empty 'role'")
    return message


def _parse_text(row: Mapping[str, Any], field: str) -> Text:
    """A plain string or a conversation (list of {role, content} messages); never empty."""
    if field not in row or row[field] is None:
        raise _FieldError(field, "missing")
    value = row[field]
    if isinstance(value, str):
        if not value.strip():
            raise _FieldError(field, "empty")
        _check_unicode(value, field)
        return value
    if isinstance(value, list):
        messages = [_parse_message(item, field, index) for index, item in enumerate(value, start=1)]
        if not any(message["content"].strip() for message in messages):
            raise _FieldError(field, "empty")
        return messages
    raise _FieldError(
        field, f"expected a string or a list of {{role, content}} messages, got {type(value).__name__}"
    )


def _parse_score(row: Mapping[str, Any], field: str) -> float | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _FieldError(field, f"expected a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _FieldError(field, f"not a finite number ({number})")
    return number


def _parse_id(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _FieldError(field, f"expected a string, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise _FieldError(field, "empty")
    if "\x00" in text:
        raise _FieldError(field, "contains a NUL character")
    _check_unicode(text, field)
    return text


def _check_unique(path: Path | str, row_number: int, field: str, value: str, first_row_of: dict[str, int]) -> None:
    """Record ``value`` of ``field`` at ``row_number``; raise naming both rows when it was seen before."""
    if value in first_row_of:
        problem = f"field {field!r}: duplicate {value!r} (first at row {first_row_of[value]})"
        raise _data_error(path, row_number, problem)
    first_row_of[value] = row_number


_FIELD_PARSERS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "text": _parse_text, "id": _parse_id, "score": _parse_score,
}


def parse_field(path: str | Path, row_number: int, row: Mapping[str, Any], field: str,
                kind: Literal["text", "id", "score"]) -> Any:
    """``row[field]`` validated as the readers here validate it (``text``: non-empty string or conversation;
    ``id``: non-empty string or integer, None when absent; ``score``: finite number, None when absent), for
    other loaders of rows from :func:`read_numbered_rows`; a bad value raises :class:`DataError` naming file,
    row and field."""
    try:
        return _FIELD_PARSERS[kind](row, field)
    except _FieldError as err:
        raise _data_error(source_name(path), row_number, str(err)) from None

def _is_conversation(text: Text) -> bool:
    return isinstance(text, list)


def _parse_preference_row(row: Mapping[str, Any]) -> PreferencePair:
    """Validate one TRL preference row; raises ``_FieldError`` naming the field (callers add file and row)."""
    prompt, chosen, rejected = (_parse_text(row, field) for field in TEXT_FIELDS)
    for field, text in (("chosen", chosen), ("rejected", rejected)):
        if _is_conversation(text) != _is_conversation(prompt):
            form = "a conversation" if _is_conversation(text) else "plain text"
            raise _FieldError(field, f"is {form} but 'prompt' is not; use one form for prompt, chosen and rejected")
    return PreferencePair(
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        score_chosen=_parse_score(row, "score_chosen"),
        score_rejected=_parse_score(row, "score_rejected"),
        pair_id=_parse_id(row, "pair_id"),
    )


# ---------------------------------------------------------------- preferences


def read_preferences(path: str | Path) -> Iterator[PreferencePair]:
    """Stream the preference pairs of a JSONL or Parquet file or a dataset (``hf:…``), validating every row; a
    ``pair_id`` given twice is an error (a replay oracle or an import would silently keep one of the two)."""
    where = source_name(path)
    first_row_of_id: dict[str, int] = {}
    for row_number, row in read_numbered_rows(path):
        try:
            pair = _parse_preference_row(row)
        except _FieldError as err:
            raise _data_error(where, row_number, str(err)) from None
        if pair.pair_id is not None:
            _check_unique(where, row_number, "pair_id", pair.pair_id, first_row_of_id)
        yield pair


def load_preferences(path: str | Path) -> list[PreferencePair]:
    """All preference pairs of a file (see :func:`read_preferences`)."""
    return list(read_preferences(path))


def _as_row(record: PreferencePair | PromptRecord) -> dict[str, Any]:
    """A record's fields as a row (shallow, unlike ``dataclasses.asdict``, which deep-copies every message)."""
    return {field.name: getattr(record, field.name) for field in fields(record)}


def _text_type(text: Text) -> pa.DataType:
    return MESSAGE_TYPE if _is_conversation(text) else pa.string()


class _SingleForm:
    """Checks that every row written to one file has the same text form (a Parquet column has one type)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.conversational: bool | None = None

    def check(self, row_number: int, prompt: Text) -> None:
        form = _is_conversation(prompt)
        if self.conversational is None:
            self.conversational = form
        elif form != self.conversational:
            raise _data_error(self.path, row_number, "field 'prompt': plain and conversational rows mixed in one file")


def _preference_rows(path: Path, pairs: Iterable[PreferencePair]) -> Iterator[dict[str, Any]]:
    """Rows to write, each validated by the reader's parser; one text form (plain/conversation) per file."""
    single_form = _SingleForm(path)
    for row_number, pair in enumerate(pairs, start=1):
        row = _as_row(pair)
        try:
            _parse_preference_row(row)
        except _FieldError as err:
            raise _data_error(path, row_number, str(err)) from None
        single_form.check(row_number, pair.prompt)
        yield row


def write_preferences(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write preference pairs atomically (streamed); returns the number of rows written."""
    path = Path(path)
    rows = _preference_rows(path, pairs)

    def schema(first: Mapping[str, Any]) -> pa.Schema:
        text = _text_type(first.get("prompt", ""))
        return pa.schema(
            [(field, text) for field in TEXT_FIELDS]
            + [(field, pa.float64()) for field in SCORE_FIELDS]
            + [("pair_id", pa.string())]
        )

    return _write(path, rows, schema)


# ---------------------------------------------------------------- prompts


def _content_id(prompt: Text) -> str:
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return "p-" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def read_prompts(path: str | Path) -> list[PromptRecord]:
    """Prompt-only rows (``prompt``, optional ``prompt_id``) of a file or dataset; other columns, e.g. ``chosen``, are
    ignored.

    A missing ``prompt_id`` becomes ``p-<sha256 of the prompt>[:16]`` (``-2``, ``-3``… for repeats of the same
    prompt), stable across runs and independent of row order for distinct prompts. Duplicate ids are errors.
    """
    where = source_name(path)
    records: list[PromptRecord] = []
    first_row_of_id: dict[str, int] = {}
    for row_number, row in read_numbered_rows(path):
        try:
            prompt = _parse_text(row, "prompt")
            given_id = _parse_id(row, "prompt_id")
        except _FieldError as err:
            raise _data_error(where, row_number, str(err)) from None
        prompt_id = given_id
        if prompt_id is None:
            base = prompt_id = _content_id(prompt)
            repeat = 1
            while prompt_id in first_row_of_id:
                repeat += 1
                prompt_id = f"{base}-{repeat}"
        else:
            _check_unique(where, row_number, "prompt_id", prompt_id, first_row_of_id)
        first_row_of_id[prompt_id] = row_number
        records.append(PromptRecord(prompt=prompt, prompt_id=prompt_id))
    return records


def write_prompts(path: str | Path, records: Iterable[PromptRecord]) -> int:
    """Write prompt records atomically; returns the number of rows written."""
    path = Path(path)

    def rows() -> Iterator[dict[str, Any]]:
        single_form = _SingleForm(path)
        for row_number, record in enumerate(records, start=1):
            row = _as_row(record)
            try:
                _parse_text(row, "prompt")
                _parse_id(row, "prompt_id")
            except _FieldError as err:
                raise _data_error(path, row_number, str(err)) from None
            single_form.check(row_number, record.prompt)
            yield row

    def schema(first: Mapping[str, Any]) -> pa.Schema:
        return pa.schema([("prompt", _text_type(first.get("prompt", ""))), ("prompt_id", pa.string())])

    return _write(path, rows(), schema)


# ---------------------------------------------------------------- writing rows


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]], schema: pa.Schema | None = None) -> int:
    """Write generic rows atomically as JSONL or Parquet (streamed); returns the number of rows.

    For Parquet the column types come from ``schema`` or, when it is None, are inferred from the first
    :data:`PARQUET_BATCH_ROWS` rows; later rows must fit those types (pass ``schema`` for columns that start
    out all-null).
    """
    return _write(Path(path), rows, (lambda _first: schema) if schema is not None else None)


def _write(path: Path, rows: Iterable[Mapping[str, Any]], schema_for: SchemaFor | None) -> int:
    """Write ``rows`` to ``path`` atomically; ``schema_for(first_row) -> pa.Schema`` fixes Parquet types."""
    fmt = file_format(path)
    with atomic_output(path) as tmp:
        if fmt == "jsonl":
            return _write_jsonl(path, tmp, rows)
        return _write_parquet(path, tmp, rows, schema_for)


def _write_jsonl(path: Path, tmp: Path, rows: Iterable[Mapping[str, Any]]) -> int:
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for count, row in enumerate(rows, start=1):
            try:
                line = json.dumps(row, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise _data_error(path, count, f"cannot be written as JSON: {err}") from None
            handle.write(line + "\n")
    return count


def _write_parquet(path: Path, tmp: Path, rows: Iterable[Mapping[str, Any]], schema_for: SchemaFor | None) -> int:
    writer: pq.ParquetWriter | None = None
    schema: pa.Schema | None = None
    count = 0
    batch: list[Mapping[str, Any]] = []

    def flush() -> None:
        nonlocal writer, schema
        try:
            if schema is None:
                schema = schema_for(batch[0]) if schema_for is not None else pa.Table.from_pylist(batch).schema
            table = pa.Table.from_pylist(batch, schema=schema)
        except (pa.ArrowException, TypeError, ValueError) as err:
            first = count - len(batch) + 1
            raise DataError(f"{path}: rows {first}-{count}: do not fit the Parquet schema: {_one_line(err)}") from None
        if writer is None:
            writer = pq.ParquetWriter(tmp, schema)
        writer.write_table(table)
        batch.clear()

    try:
        for row in rows:
            count += 1
            batch.append(row)
            if len(batch) == PARQUET_BATCH_ROWS:
                flush()
        if batch:
            flush()
        if writer is None:
            if schema_for is None:
                raise DataError(f"{path}: no rows to write and no schema for an empty Parquet file")
            writer = pq.ParquetWriter(tmp, schema_for({}))
    finally:
        if writer is not None:
            writer.close()
    return count
