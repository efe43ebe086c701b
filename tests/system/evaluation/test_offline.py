"""Offline evaluation: held-out pairs to workers' candidate pairs, their margins to logit-error metrics."""

from __future__ import annotations

import pytest

from system.evaluation.offline import logit_error_report, scored_pairs
from system.types import PreferencePair

HELD_OUT = [
    PreferencePair("x1", "good", "bad", score_chosen=2.0, score_rejected=1.5, pair_id="a"),
    PreferencePair("x2", "fine", "worse", pair_id="unscored"),
    PreferencePair("x3", "yes", "no", score_chosen=1.0, score_rejected=-1.0),
]


def test_scored_pairs_keep_pairs_with_both_scores_oriented_chosen_first() -> None:
    pairs = scored_pairs(HELD_OUT)
    assert [(p.pair_id, p.prompt, p.response_1, p.response_2) for p in pairs] == [
        ("a", "x1", "good", "bad"), ("held-out-2", "x3", "yes", "no")]


def test_logit_error_report_compares_margins_with_the_score_differences() -> None:
    # true logits 0.5 and 2.0; margins 1.0 (error 0.5, right sign) and −1.0 (error 3.0, wrong sign)
    assert logit_error_report([1.0, -1.0], HELD_OUT) == pytest.approx(
        {"eval/max_logit_error": 3.0, "eval/mean_logit_error": 1.75, "eval/error_rate": 0.5})


def test_logit_error_report_needs_one_margin_per_scored_pair() -> None:
    with pytest.raises(ValueError, match="equal non-empty shapes"):
        logit_error_report([1.0, -1.0, 0.0], HELD_OUT)
