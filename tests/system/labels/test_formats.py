"""Exports to TRL / Label Studio / Argilla and imports back into a fresh store (round trips), SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from system.data import load_preferences
from system.errors import DataError
from system.labels import HumanQueue, LabelStore
from system.labels.formats import export_labels, import_labels
from system.types import CandidatePair, Label
from tests.system.labels.people import answer_for

PAIRS = [
    CandidatePair(pair_id="p0", prompt_id="x0", prompt="Say hi", response_1="hi!", response_2="no."),
    CandidatePair(pair_id="p1", prompt_id="x1", prompt=[{"role": "user", "content": "Name a cat"}],
                  response_1="Tom", response_2="Rex"),
]


def filled_store(url: str) -> LabelStore:
    store = LabelStore(url)
    store.put([Label("p0", 1, 0.81, "reward_model", "all-MiniLM-L6-v2"),
               Label("p1", 2, 0.27, "reward_model", "all-MiniLM-L6-v2")], PAIRS, round=1)
    queue = HumanQueue(store)
    (task_id,) = queue.enqueue(PAIRS[:1], round=2)
    answer_for(queue, task_id, "alice", 2)
    return store


def comparable(store: LabelStore) -> list[tuple]:
    return sorted((r.pair_id, r.round, json.dumps(r.prompt), r.response_1, r.response_2, r.preferred,
                   round(r.prob_1, 12), r.oracle, r.model_version, r.annotator, r.decision) for r in store.labels())


@pytest.mark.parametrize(("fmt", "name"), [("label-studio", "tasks.json"), ("argilla", "records.jsonl")])
def test_full_fidelity_round_trip(tmp_path: Path, new_store_url: Callable[[], str], fmt: str, name: str) -> None:
    source = filled_store(new_store_url())
    labels, answers = tmp_path / f"labels-{name}", tmp_path / f"answers-{name}"
    # labels: two machine verdicts and the majority label the queue wrote for alice's answer; answers: hers
    assert export_labels(source, labels, fmt) == {labels: 2 if fmt == "label-studio" else 3}
    assert export_labels(source, answers, fmt, what="answers") == {answers: 1}
    with LabelStore(new_store_url()) as target:
        assert import_labels(target, labels, fmt) == 3
        assert import_labels(target, answers, fmt) == 1
        assert import_labels(target, labels, fmt) == 0  # idempotent
        assert comparable(target) == comparable(source)
        assert target.preference_pairs() == source.preference_pairs()


@pytest.mark.parametrize(("fmt", "name"), [("label-studio", "tasks.json"), ("argilla", "records.jsonl")])
def test_ties_and_both_bad_answers_round_trip_with_their_annotators(tmp_path: Path, new_store_url: Callable[[], str],
                                                                    fmt: str, name: str) -> None:
    source = LabelStore(new_store_url())
    queue = HumanQueue(source, annotations_per_pair=3)
    (task_id,) = queue.enqueue(PAIRS[:1], round=2)
    queue.answer(task_id, "tie", "ann", rationale="both greet")
    queue.answer(task_id, "both_bad", "bob")
    answer_for(queue, task_id, "cy", 1, strength="slightly")
    out = tmp_path / name
    assert export_labels(source, out, fmt, what="answers") == {out: 1 if fmt == "label-studio" else 3}
    text = out.read_text()
    assert "both greet" in text and "slightly" in text  # rationale and strength travel in the metadata
    with LabelStore(new_store_url()) as target:
        assert import_labels(target, out, fmt) == 3
        assert {r.annotator: r.decision for r in target.labels()} == {"ann": "tie", "bob": "both_bad", "cy": "1"}


def test_trl_export_of_answers_and_of_labels(tmp_path: Path, store_url: str) -> None:
    """Labels are the training rows (a tie as both orientations under tie_policy half, none under drop); answers
    one row per answer that prefers or ties, named pair@annotator."""
    with LabelStore(store_url) as store:
        queue = HumanQueue(store, annotations_per_pair=3)
        (task_id,) = queue.enqueue(PAIRS[:1], round=1)
        queue.answer(task_id, "tie", "ann")
        answer_for(queue, task_id, "bob", 1)
        answer_for(queue, task_id, "cy", 2)  # (½ + 1 + 0) / 3 = ½: a tie
        assert export_labels(store, tmp_path / "drop.jsonl", "trl-jsonl", tie_policy="drop") == {
            tmp_path / "drop.jsonl": 0}
        export_labels(store, tmp_path / "half.jsonl", "trl-jsonl")
        export_labels(store, tmp_path / "answers.jsonl", "trl-jsonl", what="answers", tie_policy="drop")
    assert [(r.chosen, r.score_chosen, r.pair_id) for r in load_preferences(tmp_path / "half.jsonl")] == [
        ("hi!", 0.5, "p0"), ("no.", 0.5, None)]
    assert [(r.pair_id, r.chosen) for r in load_preferences(tmp_path / "answers.jsonl")] == [
        ("p0@bob", "hi!"), ("p0@cy", "no.")]


@pytest.mark.parametrize(("fmt", "name"), [("trl-jsonl", "prefs.jsonl"), ("trl-parquet", "prefs.parquet")])
def test_a_store_of_plain_and_conversational_prompts_exports_both(tmp_path: Path, store_url: str, fmt: str,
                                                                  name: str) -> None:
    """TRL takes one text form per dataset: the plain pairs go to the file asked for, the conversational ones
    beside it, and each reads back with its own form and preference."""
    chat = [{"role": "user", "content": "Name a cat"}]
    pairs = [CandidatePair("plain", "", "Say hi", "hi!", "no."), CandidatePair("chat", "", chat, "Tom", "Rex")]
    with LabelStore(store_url) as store:
        store.put([Label("plain", 1, 0.8, "reward_model"), Label("chat", 2, 0.3, "reward_model")], pairs, round=1)
        out = tmp_path / name
        also = tmp_path / f"prefs.conversational{out.suffix}"
        assert export_labels(store, out, fmt) == {out: 1, also: 1}
    (plain,) = load_preferences(out)
    (conversation,) = load_preferences(also)
    assert (plain.prompt, plain.chosen, plain.rejected) == ("Say hi", "hi!", "no.")
    assert conversation.prompt == chat and conversation.chosen == [{"role": "assistant", "content": "Rex"}]


def test_label_studio_shapes(tmp_path: Path, store_url: str) -> None:
    out = tmp_path / "tasks.json"
    export_labels(filled_store(store_url), out, "label-studio")
    first = json.loads(out.read_text())[0]
    assert first["data"]["pair_id"] == "p0"
    assert first["predictions"][0]["result"][0]["value"] == {"choices": ["response_1"]}
    assert first["annotations"][0]["result"][0]["value"] == {"choices": ["response_2"]}


@pytest.mark.parametrize(("fmt", "name"), [("trl-jsonl", "prefs.jsonl"), ("trl-parquet", "prefs.parquet")])
@pytest.mark.parametrize("conversational", [False, True])
def test_trl_round_trip_keeps_the_preference(tmp_path: Path, new_store_url: Callable[[], str], fmt: str, name: str,
                                             conversational: bool) -> None:
    source = LabelStore(new_store_url())
    pairs = [CandidatePair(p.pair_id, p.prompt_id, [{"role": "user", "content": "q"}] if conversational else "q",
                           p.response_1, p.response_2) for p in PAIRS]
    source.put([Label("p0", 1, 0.81, "reward_model"), Label("p1", 2, 0.27, "reward_model")], pairs, round=1)
    source.put([Label("p0", 2, 0.0, "human", annotator="alice")], pairs, round=2)
    out = tmp_path / name
    assert export_labels(source, out, fmt) == {out: 2}
    rows = {row.pair_id: row for row in load_preferences(out)}
    # p0 has one vote each way: the tie goes to the mean prob_1 (0.81 + 0.0) / 2 < 0.5 → response 2 wins
    wrap = (lambda text: [{"role": "assistant", "content": text}]) if conversational else (lambda text: text)
    assert (rows["p0"].chosen, rows["p0"].rejected) == (wrap("no."), wrap("hi!"))
    assert (rows["p1"].chosen, rows["p1"].rejected) == (wrap("Rex"), wrap("Tom"))
    assert rows["p1"].score_chosen == pytest.approx(0.73)
    with LabelStore(new_store_url()) as target:
        assert import_labels(target, out, fmt, round=3) == 2
        back = {pair.pair_id: pair for pair in target.preference_pairs()}
        assert {k: (v.prompt, v.chosen, v.rejected) for k, v in back.items()} == {
            k: (v.prompt, v.chosen, v.rejected) for k, v in rows.items()}
        assert {r.round for r in target.labels()} == {3}


def test_bad_inputs_are_named(tmp_path: Path, store_url: str) -> None:
    store = filled_store(store_url)
    with pytest.raises(DataError, match="'csv'"):
        export_labels(store, tmp_path / "x.csv", "csv")
    with pytest.raises(DataError, match="writes a .jsonl file"):
        export_labels(store, tmp_path / "x.parquet", "trl-jsonl")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"prompt": "p", "response_1": "a", "response_2": "b"},
                                "annotations": [{"result": [{"from_name": "preferred",
                                                             "value": {"choices": ["maybe"]}}]}]}]))
    with pytest.raises(DataError, match="bad.json: row 1: field 'annotations\\[0\\]': choice 'maybe'"):
        import_labels(store, bad, "label-studio")
    bad.write_text(json.dumps([{"data": {"prompt": "p", "response_1": "a"}}]))
    with pytest.raises(DataError, match="bad.json: row 1: field 'response_2': expected a non-empty string"):
        import_labels(store, bad, "label-studio")
