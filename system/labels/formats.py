"""Export stored labels or people's answers to TRL, Label Studio and Argilla formats, and import them back.

``what`` picks the rows: ``labels`` — what training uses: machine verdicts and each human-labelled pair's
aggregate (:mod:`system.labels.aggregate`; for TRL, :meth:`LabelStore.preference_pairs`, whose rows are the loop's
training rows) — or ``answers``: every person's own answer, with its annotator, choice, strength and rationale.

- ``trl-jsonl`` / ``trl-parquet``: one row per labelled pair (prompt/chosen/rejected/pair_id, scores =
  P(chosen ≻ rejected) and its complement), via :mod:`system.data`; both-bad pairs give none, ties none or two
  (``oracle.human.tie_policy``). Answers give one row per answer, ``pair_id`` = ``<pair_id>@<annotator>``.
  Imported rows become labels with response_1 = chosen, prob_1 = 1 (a TRL row only says which response won).
- ``label-studio``: a JSON list of tasks, one per pair (``data`` = pair text); machine labels are
  ``predictions`` and human labels ``annotations``, each a ``choices`` result on the ``preferred``
  control (:data:`LABEL_STUDIO_CONFIG`: response_1, response_2, tie, both_bad) plus an ``activealign`` block with
  the label's metadata (strength and rationale included).
- ``argilla``: JSONL of Argilla v2 records, one per label (``id`` = pair_id:oracle:annotator), fields
  prompt/response_1/response_2, a ``preferred`` label question ("1", "2", "tie", "both_bad") answered as a
  suggestion (machine) or a response (human), the label's metadata in ``metadata``.

Imports are idempotent like every store write: importing the same file twice adds nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from system.data import parse_field, read_numbered_rows, read_preferences, write_preferences
from system.errors import DataError
from system.fileio import atomic_write_text
from system.labels.aggregate import CHOICE_PROB_1, CHOICES, Choice, TiePolicy, preference_rows
from system.labels.store import LabelRecord, LabelStore
from system.oracles.base import response_text, text_of
from system.types import CandidatePair, Label, PreferencePair

Format = Literal["trl-jsonl", "trl-parquet", "label-studio", "argilla"]
FORMATS: tuple[str, ...] = ("trl-jsonl", "trl-parquet", "label-studio", "argilla")
WHAT: tuple[str, ...] = ("labels", "answers")
HUMAN = "human"
LABEL_STUDIO_CONFIG = """<View>
  <Text name="prompt" value="$prompt_text"/>
  <Text name="response_1" value="$response_1"/>
  <Text name="response_2" value="$response_2"/>
  <Choices name="preferred" toName="prompt" choice="single" showInline="true">
    <Choice value="response_1"/>
    <Choice value="response_2"/>
    <Choice value="tie"/>
    <Choice value="both_bad"/>
  </Choices>
</View>"""
LABEL_STUDIO_CHOICES = {"1": "response_1", "2": "response_2", "tie": "tie", "both_bad": "both_bad"}
"""A stored choice as the Label Studio choice value, and back."""
"""Label Studio labelling config matching the exported tasks."""

Imported = tuple[Label, CandidatePair, int]


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise DataError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def content_pair_id(prompt: object, chosen: object, rejected: object) -> str:
    """A pair id from the text when a dataset row has none (order-free in the two responses)."""
    responses = sorted([json.dumps(chosen, sort_keys=True), json.dumps(rejected, sort_keys=True)])
    payload = json.dumps([prompt, responses], sort_keys=True).encode()
    return "sha-" + hashlib.sha256(payload).hexdigest()[:16]


def _label_meta(record: LabelRecord) -> dict[str, Any]:
    return {"oracle": record.oracle, "annotator": record.annotator, "prob_1": record.prob_1,
            "model_version": record.model_version, "round": record.round, "pair_id": record.pair_id,
            "choice": record.decision, "strength": record.strength, "rationale": record.rationale,
            "adjudicated_by": record.adjudicated_by}


def to_label_studio(records: Sequence[LabelRecord]) -> list[dict[str, Any]]:
    """Label Studio tasks (one per pair) with predictions (machine) and annotations (human)."""
    by_pair: dict[str, list[LabelRecord]] = defaultdict(list)
    for record in records:
        by_pair[record.pair_id].append(record)
    tasks = []
    for pair_id, pair_records in by_pair.items():
        first = pair_records[0]
        task: dict[str, Any] = {
            "data": {"pair_id": pair_id, "prompt": first.prompt, "prompt_text": text_of(first.prompt),
                     "response_1": first.response_1, "response_2": first.response_2, "round": first.round},
            "predictions": [], "annotations": [],
        }
        for record in pair_records:
            result = [{"from_name": "preferred", "to_name": "prompt", "type": "choices",
                       "value": {"choices": [LABEL_STUDIO_CHOICES[record.decision]]}}]
            entry = {"result": result, "activealign": _label_meta(record)}
            if record.oracle == HUMAN:
                task["annotations"].append(entry)
            else:
                task["predictions"].append({**entry, "model_version": record.model_version,
                                            "score": max(record.prob_1, 1 - record.prob_1)})
        tasks.append(task)
    return tasks


def _object(value: object, where: str, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object, else a DataError naming ``what`` at ``where``."""
    if not isinstance(value, dict):
        raise DataError(f"{where}: {what}: expected a JSON object, got {type(value).__name__}")
    return value


def _pair(source: str, number: int, pair_fields: dict[str, Any], pair_id: object) -> CandidatePair:
    """The pair of record ``number`` (1-based) of ``source``: prompt (text or conversation), two non-empty
    response strings, and ``pair_id`` (derived from the text when absent)."""
    prompt = parse_field(source, number, pair_fields, "prompt", "text")
    responses = []
    for field in ("response_1", "response_2"):
        value = pair_fields.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{source}: row {number}: field {field!r}: expected a non-empty string")
        responses.append(parse_field(source, number, pair_fields, field, "text"))
    pair_id = parse_field(source, number, {"pair_id": pair_id}, "pair_id", "id") or content_pair_id(prompt, *responses)
    return CandidatePair(pair_id=pair_id, prompt_id="", prompt=prompt, response_1=responses[0],
                         response_2=responses[1])


def _imported(source: str, number: int, pair: CandidatePair, choice: Choice, meta: dict[str, Any],
              defaults: dict[str, Any]) -> Imported:
    """(label, pair, round) of record ``number`` of ``source``: ``meta`` (the exported label's prob_1, oracle,
    model_version, annotator, round) over ``defaults``, every value checked."""
    where = f"{source}: row {number}"
    values = {**defaults, **{key: meta[key] for key in defaults if meta.get(key) is not None}}
    prob_1 = parse_field(source, number, values, "prob_1", "score")
    if not 0.0 <= prob_1 <= 1.0:
        raise DataError(f"{where}: field 'prob_1': {prob_1} is not a probability in [0, 1]")
    label_round = values["round"]
    if isinstance(label_round, bool) or not isinstance(label_round, int) or label_round < 0:
        raise DataError(f"{where}: field 'round': expected a non-negative integer, got {label_round!r}")
    for field in ("oracle", "model_version", "annotator"):
        if not isinstance(values[field], str):
            raise DataError(f"{where}: field {field!r}: expected a string, got {type(values[field]).__name__}")
    label = Label(pair_id=pair.pair_id, preferred=2 if choice == "2" else 1, prob_1=prob_1, oracle=values["oracle"],
                  model_version=values["model_version"], annotator=values["annotator"],
                  choice=choice if choice in ("tie", "both_bad") else "")
    return label, pair, label_round


def _choice(entry: dict[str, Any], where: str) -> Choice:
    results = entry.get("result")
    from_label_studio = {value: choice for choice, value in LABEL_STUDIO_CHOICES.items()}
    for item in results if isinstance(results, list) else []:
        if isinstance(item, dict) and item.get("from_name") == "preferred":
            value = item.get("value")
            choices = (value.get("choices") if isinstance(value, dict) else None) or [None]
            choice = choices[0] if isinstance(choices, list) else choices
            if choice in from_label_studio:
                return from_label_studio[choice]  # type: ignore[return-value]
            raise DataError(f"{where}: choice {choice!r} is not one of {', '.join(from_label_studio)}")
    raise DataError(f"{where}: no 'preferred' choice in result")


def from_label_studio(tasks: Sequence[Any], source: str = "<label-studio>") -> list[Imported]:
    """(label, pair, round) for every prediction and annotation of Label Studio tasks; a bad task raises
    :class:`DataError` naming the file, the task (``row N``, 1-based) and the field."""
    imported: list[Imported] = []
    for number, task in enumerate(tasks, start=1):
        where = f"{source}: row {number}"
        task = _object(task, where, "task")
        data = _object(task.get("data"), where, "field 'data'")
        pair = _pair(source, number, data, data.get("pair_id"))
        for kind in ("predictions", "annotations"):
            entries = task.get(kind) or []
            if not isinstance(entries, list):
                raise DataError(f"{where}: field {kind!r}: expected a list, got {type(entries).__name__}")
            for index, entry in enumerate(entries):
                entry_where = f"{where}: field '{kind}[{index}]'"
                entry = _object(entry, entry_where, "entry")
                choice = _choice(entry, entry_where)
                meta = _object(entry.get("activealign") or {}, entry_where, "field 'activealign'")
                defaults = {"prob_1": CHOICE_PROB_1.get(choice, 0.5),
                            "oracle": HUMAN if kind == "annotations" else "label-studio",
                            "model_version": entry.get("model_version") or "",
                            "annotator": str(entry.get("completed_by") or ""), "round": data.get("round") or 0}
                imported.append(_imported(source, number, pair, choice, meta, defaults))
    return imported


def to_argilla(records: Sequence[LabelRecord]) -> list[dict[str, Any]]:
    """Argilla v2 records, one per label (question ``preferred`` with labels "1" / "2")."""
    rows = []
    for record in records:
        row: dict[str, Any] = {
            "id": f"{record.pair_id}:{record.oracle}:{record.annotator}",
            "fields": {"prompt": text_of(record.prompt), "response_1": record.response_1,
                       "response_2": record.response_2},
            "metadata": {**_label_meta(record), "prompt": record.prompt},
            "suggestions": {}, "responses": {},
        }
        if record.oracle == HUMAN:
            row["responses"]["preferred"] = [{"value": record.decision, "user_id": record.annotator}]
        else:
            row["suggestions"]["preferred"] = {"value": record.decision,
                                               "score": max(record.prob_1, 1 - record.prob_1),
                                               "agent": record.model_version}
        rows.append(row)
    return rows


def from_argilla(rows: Iterable[tuple[int, dict[str, Any]]], source: str = "<argilla>") -> list[Imported]:
    """(label, pair, round) for each numbered Argilla record with a ``preferred`` response or suggestion; a bad
    record raises :class:`DataError` naming the file, the row and the field."""
    imported: list[Imported] = []
    for number, row in rows:
        where = f"{source}: row {number}"
        fields = _object(row.get("fields"), where, "field 'fields'")
        meta = _object(row.get("metadata") or {}, where, "field 'metadata'")
        responses = _object(row.get("responses") or {}, where, "field 'responses'").get("preferred") or []
        suggestion = _object(row.get("suggestions") or {}, where, "field 'suggestions'").get("preferred")
        answer = responses[0] if isinstance(responses, list) and responses else suggestion
        if not isinstance(answer, dict) or str(answer.get("value")) not in CHOICES:
            raise DataError(f"{where}: no 'preferred' answer of '1', '2', 'tie' or 'both_bad'")
        choice: Choice = str(answer["value"])  # type: ignore[assignment]
        human = bool(responses)
        defaults = {"prob_1": CHOICE_PROB_1.get(choice, 0.5), "oracle": HUMAN if human else "argilla",
                    "model_version": "" if human else answer.get("agent") or "",
                    "annotator": (answer.get("user_id") or "") if human else "", "round": 0}
        pair_fields = {**fields, "prompt": meta.get("prompt", fields.get("prompt"))}
        pair = _pair(source, number, pair_fields, meta.get("pair_id"))
        imported.append(_imported(source, number, pair, choice, meta, defaults))
    return imported


def conversational_path(out: str | Path) -> Path:
    """Where a TRL export puts its conversational pairs when the store also holds plain ones:
    ``labels.jsonl`` → ``labels.conversational.jsonl``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.conversational{out.suffix}")


def answer_rows(records: Sequence[LabelRecord], tie_policy: TiePolicy) -> list[PreferencePair]:
    """TRL rows of people's answers, one (none, or two for a tie) per answer, by the rule the aggregates train by
    (:func:`~system.labels.aggregate.preference_rows`); ``pair_id`` = ``<pair_id>@<annotator>``."""
    return [row for record in records for row in preference_rows(
        f"{record.pair_id}@{record.annotator}", record.prompt, record.response_1, record.response_2,
        record.decision, record.prob_1, tie_policy)]


def export_labels(store: LabelStore, out: str | Path, fmt: str, max_round: int | None = None, what: str = "labels",
                  tie_policy: TiePolicy = "half") -> dict[Path, int]:
    """Write the store's labels or people's answers (``what``; rounds ≤ ``max_round``) to ``out`` in ``fmt``;
    returns the rows written per file.

    A TRL file holds one text form (TRL, like a Parquet column, takes a dataset as all plain or all
    conversational): when the store holds both, the plain pairs go to ``out`` and the conversational ones to
    :func:`conversational_path`; a store of one form writes ``out`` only.
    """
    _check_format(fmt)
    if what not in WHAT:
        raise DataError(f"--what {what!r}: expected one of {', '.join(WHAT)}")
    records = [record for record in store.labels(max_round=max_round) if record.is_answer == (what == "answers")]
    if fmt in ("trl-jsonl", "trl-parquet"):
        suffix = ".jsonl" if fmt == "trl-jsonl" else ".parquet"
        if Path(out).suffix != suffix:
            raise DataError(f"{out}: --format {fmt} writes a {suffix} file")
        pairs = (answer_rows(records, tie_policy) if what == "answers"
                 else store.preference_pairs(max_round=max_round, tie_policy=tie_policy))
        plain = [pair for pair in pairs if isinstance(pair.prompt, str)]
        if len(plain) in (0, len(pairs)):
            return {Path(out): write_preferences(out, pairs)}
        conversational = [pair for pair in pairs if not isinstance(pair.prompt, str)]
        return {Path(out): write_preferences(out, plain),
                conversational_path(out): write_preferences(conversational_path(out), conversational)}
    if fmt == "label-studio":
        tasks = to_label_studio(records)
        atomic_write_text(out, json.dumps(tasks, ensure_ascii=False, indent=1))
        return {Path(out): len(tasks)}
    rows = to_argilla(records)
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    return {Path(out): len(rows)}


def _from_trl(path: str | Path, oracle: str, round: int) -> list[Imported]:
    imported: list[Imported] = []
    for row in read_preferences(path):
        pair_id = row.pair_id or content_pair_id(row.prompt, row.chosen, row.rejected)
        pair = CandidatePair(pair_id=pair_id, prompt_id="", prompt=row.prompt, response_1=response_text(row.chosen),
                             response_2=response_text(row.rejected))
        imported.append((Label(pair_id=pair_id, preferred=1, prob_1=1.0, oracle=oracle), pair, round))
    return imported


def import_labels(store: LabelStore, path: str | Path, fmt: str, round: int = 0, oracle: str = "trl") -> int:
    """Read labels from ``path`` in ``fmt`` into ``store``; returns how many were new.

    ``round`` and ``oracle`` apply to TRL files (which carry neither); the other formats keep their own.
    """
    _check_format(fmt)
    if fmt in ("trl-jsonl", "trl-parquet"):
        imported = _from_trl(path, oracle, round)
    elif fmt == "label-studio":
        try:
            tasks = json.loads(Path(path).read_bytes())
        except (OSError, ValueError, RecursionError) as exc:
            raise DataError(f"{path}: not a readable Label Studio JSON file ({type(exc).__name__}: "
                            f"{' '.join(str(exc).split())})") from None
        if not isinstance(tasks, list):
            raise DataError(f"{path}: Label Studio import must be a JSON list of tasks")
        imported = from_label_studio(tasks, str(path))
    else:
        imported = from_argilla(read_numbered_rows(path), str(path))
    added = 0
    by_round: dict[int, list[Imported]] = defaultdict(list)
    for item in imported:
        by_round[item[2]].append(item)
    for label_round, items in by_round.items():
        added += store.put([label for label, _, _ in items], {pair.pair_id: pair for _, pair, _ in items},
                           round=label_round)
    return added
