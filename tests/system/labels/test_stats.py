"""``annotation_stats``: α, Fleiss' κ and each annotator against the others, over all rounds and per round, equal to
values counted by hand from the answers (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from system.labels import HumanQueue, LabelStore
from system.labels.stats import annotation_stats
from system.types import CandidatePair
from tests.system.labels.people import answer_for


@pytest.fixture
def store(store_url: str) -> LabelStore:
    with LabelStore(store_url) as opened:
        yield opened


def answer_round(queue: HumanQueue, round: int, votes: dict[str, list[int]]) -> None:
    """Queue as many pairs as the longest list of ``votes`` in ``round`` and answer them as ``{name: [choice…]}``."""
    count = max(len(choices) for choices in votes.values())
    pairs = [CandidatePair(f"r{round}p{i}", f"x{i}", f"prompt {i}", f"a{round}.{i}", f"b{round}.{i}")
             for i in range(count)]
    ids = queue.enqueue(pairs, round=round)
    for name, choices in votes.items():
        for task_id, choice in zip(ids, choices, strict=False):
            answer_for(queue, task_id, name, choice, answer_ms=1000)


def test_stats_per_round_and_overall_equal_the_hand_counts(store: LabelStore) -> None:
    queue = HumanQueue(store, annotations_per_pair=3)
    answer_round(queue, 2, {"ann": [1, 1, 2], "bob": [1, 2, 2], "cy": [1, 1]})  # units {1,1,1} {1,2,1} {2,2}
    answer_round(queue, 3, {"ann": [1, 2], "bob": [2, 1], "cy": [1, 2]})  # units {1,2,1} {2,1,2}
    overall = annotation_stats(store)
    second, third = overall.rounds
    assert (second.round, third.round, overall.round) == (2, 3, None)
    assert (second.pairs, second.answers, third.pairs, third.answers, overall.pairs, overall.answers) == (
        3, 8, 2, 6, 5, 14)
    # Round 2: coincidences o11 = 4, o12 = o21 = 1, o22 = 2; n1 = 5, n2 = 3: α = 1 − 7·2/(2·5·3) = 8/15.
    # Fleiss: P_u = 1, 1/3, 1 → P̄ = 7/9; p = 5/8, 3/8 → P̄e = 17/32; κ = (7/9 − 17/32)/(15/32) = 71/135.
    assert second.krippendorff_alpha == pytest.approx(8 / 15) and second.fleiss_kappa == pytest.approx(71 / 135)
    # Round 3: o11 = o22 = 1, o12 = o21 = 2; n1 = n2 = 3: α = 1 − 5·4/18 = −1/9.
    # Fleiss: P_u = 1/3, 1/3; p = 1/2, 1/2 → P̄e = 1/2; κ = (1/3 − 1/2)/(1/2) = −1/3.
    assert third.krippendorff_alpha == pytest.approx(-1 / 9) and third.fleiss_kappa == pytest.approx(-1 / 3)
    # All five units: o11 = 5, o22 = 3, o12 = o21 = 3; n1 = 8, n2 = 6: α = 1 − 13·6/(2·8·6) = 3/16.
    # Fleiss: P̄ = (1 + 1/3 + 1 + 1/3 + 1/3)/5 = 3/5; p = 8/14, 6/14 → P̄e = 25/49; κ = (3/5 − 25/49)/(24/49) = 11/60.
    assert overall.krippendorff_alpha == pytest.approx(3 / 16) and overall.fleiss_kappa == pytest.approx(11 / 60)
    bob = {a.name: a for a in third.annotators}["bob"]
    # Round 3: the others (ann, cy) agree on both pairs (1, then 2) and bob answered 2, then 1: no hit, and
    # κ = (0 − ½)/(1 − ½) = −1. ann's others (bob, cy) split on both pairs: nothing to compare.
    assert (bob.agreement_with_others, bob.kappa_with_others) == (0.0, pytest.approx(-1.0))
    ann = {a.name: a for a in third.annotators}["ann"]
    assert (ann.answers, ann.agreement_with_others, ann.kappa_with_others) == (2, None, None)
    assert annotation_stats(store, round=3) == third  # one round asked for: the same numbers, no breakdown


def test_stats_of_an_empty_store_are_empty(store: LabelStore) -> None:
    stats = annotation_stats(store)
    assert (stats.pairs, stats.answers, stats.krippendorff_alpha, stats.fleiss_kappa, stats.rounds) == (
        0, 0, None, None, [])
