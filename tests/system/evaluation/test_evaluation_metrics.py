"""Evaluation metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest

from system.evaluation import evaluate_generations, logit_error_metrics, mean_reward, win_rate


def test_win_rate_counts_ties_as_half() -> None:
    # wins at 0 and 3, tie at 1, loss at 2 → (1 + 0.5 + 0 + 1) / 4
    assert win_rate([0.9, 0.5, 0.1, 0.7], [0.2, 0.5, 0.3, 0.6]) == pytest.approx(2.5 / 4)


def test_win_rate_treats_float_noise_as_a_tie() -> None:
    assert win_rate([0.2356403693], [0.2356403646]) == 0.5
    assert win_rate([0.2356403693], [0.2356403646], tie_tolerance=0.0) == 1.0


def test_win_rate_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="3 policy rewards vs 2"):
        win_rate([1.0, 2.0, 3.0], [1.0, 2.0])


def test_logit_error_metrics_hand_computed() -> None:
    metrics = logit_error_metrics([1.0, -0.5, 2.0, 0.3], [0.5, 0.5, 2.0, 0.0])
    # |errors| = 0.5, 1.0, 0.0, 0.3; the last pair (true logit 0) is left out of the error rate; one sign flip of 3
    assert metrics["max_logit_error"] == pytest.approx(1.0)
    assert metrics["mean_logit_error"] == pytest.approx(1.8 / 4)
    assert metrics["error_rate"] == pytest.approx(1 / 3)


def test_untrained_policy_errs_half_the_time() -> None:
    assert logit_error_metrics([0.0, 0.0], [1.0, -2.0])["error_rate"] == 0.5


def test_mean_reward_of_nothing_is_nan() -> None:
    assert math.isnan(mean_reward([]))


def test_evaluate_generations_scores_policy_and_reference_in_one_call() -> None:
    calls: list[int] = []

    def length_reward(prompts: list, responses: list[str]) -> list[float]:
        calls.append(len(responses))
        return [float(len(r)) for r in responses]

    result = evaluate_generations(["p1", "p2"], ["long answer", "x"], ["short", "yy"], length_reward)
    assert calls == [4]
    metrics = result.metrics()
    assert metrics["eval/reward"] == pytest.approx((11 + 1) / 2)
    assert metrics["eval/reference_reward"] == pytest.approx((5 + 2) / 2)
    assert metrics["eval/win_rate"] == pytest.approx(0.5)
