"""Richer answers at the human queue (tie, both bad, strength, rationale), changing them until the round is
consumed, adjudication by a reviewer, gold pairs, and what the aggregates train as (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from system.errors import AnswerClosedError, NoAnswerError
from system.labels import HumanQueue, LabelStore
from system.labels.stats import annotation_stats
from system.types import CandidatePair
from tests.system.labels.people import answer_for


def pairs(n: int, prefix: str = "r") -> list[CandidatePair]:
    return [CandidatePair(f"{prefix}{i}", f"x{i}", f"prompt {i}", f"a{i}", f"b{i}") for i in range(n)]


@pytest.fixture
def store(store_url: str) -> LabelStore:
    with LabelStore(store_url) as opened:
        yield opened


def aggregate_rows(store: LabelStore) -> list[tuple[str, str, float, str]]:
    return [(r.pair_id, r.decision, r.prob_1, r.adjudicated_by) for r in store.labels() if not r.annotator]


def test_ties_both_bad_strength_and_rationale_are_stored_per_answer(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=3)
    (task_id,) = queue.enqueue(pairs(1), round=1)
    answer_for(queue, task_id, "ann", 2, strength="clearly", rationale="b0 answers the question")
    queue.answer(task_id, "tie", "bob", rationale="same content")
    queue.answer(task_id, "both_bad", "cy")
    answers = {r.annotator: (r.decision, r.prob_1, r.strength, r.rationale) for r in store.labels() if r.annotator}
    assert answers == {"ann": ("2", 0.0, "clearly", "b0 answers the question"), "bob": ("tie", 0.5, "", "same content"),
                       "cy": ("both_bad", 0.5, "", "")}
    # majority by hand: one both-bad of three is a minority; the others' mean is (0 + ½) / 2 = ¼ → response 2
    assert aggregate_rows(store) == [("r0", "2", pytest.approx(0.25), "")]
    assert [(p.chosen, p.score_chosen) for p in store.preference_pairs()] == [("b0", pytest.approx(0.75))]


def test_an_answer_changes_until_the_round_is_consumed(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=1)
    first, second = queue.enqueue(pairs(2), round=3)
    answer_for(queue, first, "ann", 1)
    assert aggregate_rows(store) == [("r0", "1", 1.0, "")]
    assert queue.revise(first, "both_bad", "ann").decision == "both_bad"
    assert aggregate_rows(store) == [("r0", "both_bad", 0.5, "")]  # re-settled: a new aggregate row
    assert store.preference_pairs() == []  # both bad trains on nothing
    queue.withdraw(first, "ann")  # undo: the task is open again and hers to answer
    assert aggregate_rows(store) == [] and queue.progress() == (0, 2)
    assert queue.next_task("ann").task_id == first
    with pytest.raises(NoAnswerError, match=f"task_id {first}: no answer of 'bob' to change"):
        queue.revise(first, 1, "bob")
    answer_for(queue, first, "ann", 2)
    with pytest.raises(AnswerClosedError, match="round 3: pair 'r1' has no label now"):
        queue.consume(3, ["r0", "r1"])  # nothing taken, nothing marked
    assert queue.consumed_at(3) is None
    (label,) = queue.consume(3, ["r0", "r1"], allow_missing=True)  # a deadline passed: r1 is left out
    assert (label.pair_id, label.decision) == ("r0", "2")
    for change in (lambda: queue.revise(first, 1, "ann"), lambda: queue.withdraw(first, "ann"),
                   lambda: queue.answer(second, 1, "bob")):
        with pytest.raises(AnswerClosedError, match="round 3's labels were consumed by training at .*final"):
            change()
    assert queue.next_task("bob") is None  # the consumed round's open task is handed out no more
    assert [r.decision for r in queue.consume(3, ["r0"])] == ["2"]  # a repeated call: the same labels


def test_disagreeing_answers_wait_for_a_reviewer_whose_decision_is_final(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=3, adjudicate_below=0.5)
    split, agreed = queue.enqueue(pairs(2), round=1)
    for who, choice in (("ann", 1), ("bob", 2), ("cy", "tie")):  # agreement 1/3 < 0.5
        answer_for(queue, split, who, choice) if choice != "tie" else queue.answer(split, "tie", who)
    for who, choice in (("ann", 1), ("bob", 1), ("cy", 2)):  # agreement 2/3: aggregated as usual
        answer_for(queue, agreed, who, choice)
    assert aggregate_rows(store) == [("r1", "1", pytest.approx(2 / 3), "")]
    assert queue.progress() == (1, 2) and queue.waiting_for_review() == 1
    task, answers = queue.review_next()
    assert task.task_id == split and sorted(r.decision for r in answers) == ["1", "2", "tie"]
    label = queue.adjudicate(split, "2", "rita", rationale="b0 is correct")
    assert (label.decision, label.prob_1, label.adjudicated_by) == ("2", 0.0, "rita")
    assert queue.review_next() is None and queue.progress() == (2, 2)
    with pytest.raises(AnswerClosedError, match="decided by reviewer 'rita'; the decision is final"):
        queue.revise(split, 1, "ann")
    with pytest.raises(AnswerClosedError, match="not waiting for review"):
        queue.adjudicate(agreed, "1", "rita")
    assert annotation_stats(store).adjudicated == 1


def test_gold_pairs_come_every_nth_task_and_never_reach_the_labels(store: LabelStore) -> None:
    queue = HumanQueue(store, gold_rate=0.25)
    gold = pairs(2, prefix="gold-")
    queue.enqueue_gold([(gold[0], "1"), (gold[1], "2")])
    queue.enqueue(pairs(7), round=1)
    served = []
    for _ in range(8):
        task = queue.next_task("ann")
        served.append(task.pair_id)
        answer_for(queue, task.task_id, "ann", 1)  # she always takes response 1: right on gold-0, wrong on gold-1
    assert served == ["r0", "r1", "r2", "gold-0", "r3", "r4", "r5", "gold-1"]  # every 4th task
    assert not [r for r in store.labels() if r.pair_id.startswith("gold-")]  # no training, no export
    assert queue.progress() == (6, 7)  # gold pairs are no part of the work
    (ann,) = annotation_stats(store).annotators
    assert (ann.answers, ann.gold_answers, ann.gold_accuracy) == (6, 2, 0.5)


def test_dawid_skene_aggregates_are_refitted_when_the_round_is_consumed(store: LabelStore) -> None:
    """Under Dawid–Skene a pair's label depends on every answer: the labels training takes are those of the model
    fitted when the round is consumed, and they equal a fit over all answers then."""
    from system.labels.aggregate import aggregate

    queue = HumanQueue(store, annotations_per_pair=3, aggregation="dawid_skene")
    ids = queue.enqueue(pairs(6), round=2)
    votes = {"ann": [1, 1, 2, 2, 1, 1], "bob": [1, 1, 2, 2, 1, 2], "cy": [2, 2, 1, 1, 2, 1]}
    for name, choices in votes.items():
        for task_id, choice in zip(ids, choices, strict=True):
            answer_for(queue, task_id, name, choice)
    taken = {r.pair_id: (r.decision, r.prob_1) for r in queue.consume(2, [p.pair_id for p in pairs(6)])}
    answers = {f"r{i}": {name: str(choices[i]) for name, choices in votes.items()} for i in range(6)}
    expected = aggregate(answers, sorted(answers), "dawid_skene")
    assert taken == {unit: (a.choice, pytest.approx(a.prob_1)) for unit, a in expected.items()}


def test_tie_policy_decides_what_a_tie_trains_as(store: LabelStore) -> None:
    queue = HumanQueue(store)
    (task_id,) = queue.enqueue(pairs(1), round=1)
    queue.answer(task_id, "tie", "ann")
    assert store.preference_pairs(tie_policy="drop") == []
    both = store.preference_pairs(tie_policy="half")
    assert [(p.chosen, p.rejected, p.score_chosen, p.pair_id) for p in both] == [
        ("a0", "b0", 0.5, "r0"), ("b0", "a0", 0.5, None)]
