"""Pure helpers of the active loop: prompt windows, offline pool split, labels → preference pairs."""

from __future__ import annotations

import pytest

from system.loop import label_counts, labelled_pairs, offline_pool, prompts_for_round
from system.types import CandidatePair, Label, PreferencePair, PromptRecord


def test_prompt_windows_cover_the_set_before_repeating() -> None:
    prompts = [PromptRecord(f"p{i}", f"id{i}") for i in range(10)]
    seen = [p.prompt_id for r in (1, 2) for p in prompts_for_round(prompts, 5, r, seed=3)]
    assert sorted(seen) == sorted(p.prompt_id for p in prompts)
    assert prompts_for_round(prompts, 5, 3, seed=3) == prompts_for_round(prompts, 5, 1, seed=3)


def test_offline_pool_hides_labels_and_holds_out_every_fifth() -> None:
    pairs = [PreferencePair("x", f"good{i}", f"bad{i}", 1.0, 0.0, f"id{i}") for i in range(20)]
    pool = offline_pool(pairs, seed=0)
    assert [p.pair_id for p in pool.held_out] == ["id0", "id5", "id10", "id15"]
    assert len(pool.candidates) == 16
    firsts = [c.response_1.startswith("good") for c in pool.candidates]
    assert 0 < sum(firsts) < 16  # the stored winner is not always response 1


def test_labelled_pairs_put_the_preferred_response_first() -> None:
    pair = CandidatePair("a", "p", "x", "one", "two")
    chosen = labelled_pairs([pair], [Label("a", 2, 0.2, "judge")])
    # scored P(chosen ≻ rejected) = 1 − prob_1, and its complement
    assert chosen == [PreferencePair("x", "two", "one", score_chosen=1 - 0.2, score_rejected=1 - (1 - 0.2),
                                     pair_id="a")]


def test_people_s_labels_train_as_export_writes_them() -> None:
    """A both-bad pair trains on nothing and is counted; a tie trains as both orientations (tie_policy half) or not
    at all (drop); a preference keeps its probability as the chosen response's score."""
    pairs = [CandidatePair(f"p{i}", "x", "q", f"a{i}", f"b{i}") for i in range(3)]
    labels = [Label("p0", 2, 1 / 3, "human"), Label("p1", 1, 0.5, "human", choice="tie"),
              Label("p2", 1, 0.5, "human", choice="both_bad")]
    half = labelled_pairs(pairs, labels, "half")
    assert [(p.pair_id, p.chosen, p.score_chosen) for p in half] == [
        ("p0", "b0", pytest.approx(2 / 3)), ("p1", "a1", 0.5), (None, "b1", 0.5)]
    assert [p.pair_id for p in labelled_pairs(pairs, labels, "drop")] == ["p0"]
    assert label_counts(labels) == {"labels/both_bad": 1.0, "labels/ties": 1.0}
