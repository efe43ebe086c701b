"""k annotators per pair: blind, once per person, pairs finished before new ones are started, and one majority
label per pair — the row the loop and the exports train on (SQLite and PostgreSQL)."""

from __future__ import annotations

import time

import pytest

from system.config import load_config
from system.errors import ConfigError, TaskAnsweredError
from system.labels import HumanQueue, LabelStore
from system.labels.stats import annotation_stats
from system.types import CandidatePair
from tests.system.labels.people import answer_for


def pairs(n: int) -> list[CandidatePair]:
    return [CandidatePair(f"k{i}", f"x{i}", f"prompt {i}", f"a{i}", f"b{i}") for i in range(n)]


@pytest.fixture
def store(store_url: str) -> LabelStore:
    with LabelStore(store_url) as opened:
        yield opened


def test_three_answers_make_one_majority_label(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=3)
    first, second = queue.enqueue(pairs(2), round=1)
    answer_for(queue, first, "ann", 1, answer_ms=800)
    assert queue.next_task("ann").task_id == second  # never a pair she answered
    assert queue.next_task("bob").task_id == first  # a started pair before a new one
    with pytest.raises(TaskAnsweredError, match="answered already by 'ann'"):
        answer_for(queue, first, "ann", 2)
    answer_for(queue, first, "bob", 2)
    assert queue.progress() == (0, 2) and not [r for r in store.labels() if not r.annotator]
    answer_for(queue, first, "cy", 1)
    (label,) = [r for r in store.labels() if not r.annotator]
    assert (label.pair_id, label.preferred, label.prob_1, label.oracle) == ("k0", 1, pytest.approx(2 / 3), "human")
    assert queue.progress() == (1, 2)
    with pytest.raises(TaskAnsweredError, match="task_id .*: pair 'k0' is answered already$"):
        answer_for(queue, first, "dee", 2)
    (trained,) = store.preference_pairs()  # the majority label, not a vote over four rows
    assert (trained.pair_id, trained.chosen, trained.score_chosen) == ("k0", "a0", pytest.approx(2 / 3))


def test_stats_measure_agreement_over_pairs_with_two_or_more_answers(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=3)
    ids = queue.enqueue(pairs(3), round=2)
    votes = {"ann": [1, 1, 2], "bob": [1, 2, 2], "cy": [1, 1]}  # cy leaves the third pair to nobody
    for name, choices in votes.items():
        for task_id, choice in zip(ids, choices, strict=False):
            answer_for(queue, task_id, name, choice, answer_ms=1000 * len(name))
    stats = annotation_stats(store, round=2)
    # units {1,1,1}, {1,2,1}, {2,2}: o_11 = 3·2/2 + 2·1/2 = 4, o_22 = 1·... by hand: pairable values n = 8;
    # o_12 = o_21 = 2/2 = 1; o_11 = 3 + 1 = 4; o_22 = 2; n_1 = 5, n_2 = 3; α = 1 − 7·2/(2·5·3) = 8/15
    assert stats.pairs == 3 and stats.answers == 8
    assert stats.krippendorff_alpha == pytest.approx(8 / 15)
    by_name = {a.name: a for a in stats.annotators}
    assert by_name["bob"].agreement_with_others == pytest.approx(2 / 3)  # others' majority 1, 1, 2 vs his 1, 2, 2
    assert by_name["cy"].median_answer_ms == 2000 and by_name["ann"].answers == 3


def test_a_person_who_always_takes_the_first_shown_response_splits_evenly_between_1_and_2(store: LabelStore) -> None:
    """Left/right order is random per person and task and stored de-randomised: always pressing "1" over 200 tasks
    stores response 1 for about half (binomial, p = ½: 100 ± 4σ ≈ [72, 128]); a second person sees other orders."""
    queue = HumanQueue(store)
    ids = queue.enqueue(pairs(200), round=0)
    stored = [queue.answer(task_id, 1, "lefty").preferred for task_id in ids]
    assert 72 <= stored.count(1) <= 128
    shown = [queue.task(task_id).shown_to("lefty") == queue.task(task_id).shown_to("other") for task_id in ids]
    assert 60 <= sum(shown) <= 140  # the two people's orders agree on about half the tasks, not all


def test_an_even_number_of_annotators_per_pair_is_refused() -> None:
    with pytest.raises(ConfigError, match="oracle.human.annotations_per_pair: .*must be odd"):
        load_config(None, ["oracle.human.annotations_per_pair=2"])


def test_a_handed_out_task_holds_a_place_so_people_asking_at_once_get_different_pairs(store: LabelStore) -> None:
    """k = 3: three people asking before anyone answers share the first pair and fill its places; the fourth gets
    the second pair instead of a place that three others hold. A reload hands the same pair back; a skip, an answer
    or another pair frees the place."""
    queue = HumanQueue(store, annotations_per_pair=3)
    first, second = queue.enqueue(pairs(2), round=1)
    assert [queue.next_task(name).task_id for name in ("ann", "bob", "cy", "dee")] == [first, first, first, second]
    assert queue.next_task("ann").task_id == first  # her reservation, not a new pair
    queue.answer(first, "skip", "bob")  # bob's place is free again ...
    assert queue.next_task("eve").task_id == first  # ... and goes to eve
    answer_for(queue, first, "ann", 1)
    answer_for(queue, first, "cy", 2)
    answer_for(queue, first, "eve", 1)
    assert queue.progress() == (1, 2)
    assert queue.next_task("bob").task_id == second  # the second pair's places: dee's and now bob's


def test_a_reservation_expires(store: LabelStore) -> None:
    """A person who walks away holds the place only ``reservation_s``: then it is handed to someone else."""
    queue = HumanQueue(store, annotations_per_pair=1, reservation_s=0.2)
    first, second = queue.enqueue(pairs(2), round=1)
    assert queue.next_task("ann").task_id == first
    assert queue.next_task("bob").task_id == second
    assert queue.next_task("cy") is None  # both places held
    time.sleep(0.3)
    assert queue.next_task("cy").task_id == first
