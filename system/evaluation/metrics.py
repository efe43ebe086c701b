"""Closed-form evaluation metrics on plain sequences of numbers (no models involved).

- Online (ActiveDPO paper, §5): mean oracle reward of generations, and win-rate of the policy against the
  reference policy on the same prompts, judged by the oracle: ``mean_i 1[r_i > r_ref_i] + ½·1[r_i = r_ref_i]``.
- Offline (ADPO paper, §6): for held-out pairs with true preference logit ``ℓ*_i = R(x,y1) − R(x,y2)`` and the
  policy's predicted logit ``ℓ̂_i = h_i`` (the DPO implicit-reward margin), the max and mean absolute
  logit error ``|ℓ̂_i − ℓ*_i|`` and the error rate ``mean_i 1[sign ℓ̂_i ≠ sign ℓ*_i]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mean_reward(rewards: Sequence[float]) -> float:
    """Average oracle reward; NaN for an empty sequence."""
    return float(np.mean(rewards)) if len(rewards) else float("nan")


def win_rate(policy_rewards: Sequence[float], reference_rewards: Sequence[float], tie_tolerance: float = 1e-6) -> float:
    """Fraction of prompts where the policy's response beats the reference's (ties count ½).

    Args:
        policy_rewards: oracle reward of the policy's response per prompt, shape [N].
        reference_rewards: oracle reward of the reference policy's response on the same prompts, shape [N].
        tie_tolerance: rewards closer than this are a tie (a neural judge scores the same text with
            float noise that depends on how it was batched).
    """
    policy = np.asarray(policy_rewards, dtype=np.float64)
    reference = np.asarray(reference_rewards, dtype=np.float64)
    if policy.shape != reference.shape:
        raise ValueError(f"win_rate: {policy.shape[0]} policy rewards vs {reference.shape[0]} reference rewards")
    if policy.size == 0:
        return float("nan")
    tie = np.abs(policy - reference) <= tie_tolerance
    return float(np.mean((~tie & (policy > reference)) + 0.5 * tie))


def logit_error_metrics(predicted_logits: Sequence[float], true_logits: Sequence[float]) -> dict[str, float]:
    """The ADPO paper's offline metrics (docs/method.md, "Metrics"): ``max_logit_error``, ``mean_logit_error`` and
    ``error_rate``.

    Args:
        predicted_logits: the policy's preference logit ℓ̂ for each held-out pair, shape [N].
        true_logits: the ground-truth logit ℓ* = R(x,y1) − R(x,y2), shape [N].

    A pair whose true logit is exactly 0 has no preferred response and is left out of the error rate; a
    predicted logit of exactly 0 (e.g. the untrained policy, πθ = πref) counts as half an error.
    """
    predicted = np.asarray(predicted_logits, dtype=np.float64)
    truth = np.asarray(true_logits, dtype=np.float64)
    if predicted.shape != truth.shape or predicted.size == 0:
        raise ValueError(f"logit_error_metrics: need equal non-empty shapes, got {predicted.shape} and {truth.shape}")
    errors = np.abs(predicted - truth)
    decided = truth != 0
    guess = predicted[decided]
    wrong = np.where(guess == 0, 0.5, np.sign(guess) != np.sign(truth[decided]))  # no preference = a coin flip
    return {
        "max_logit_error": float(errors.max()),
        "mean_logit_error": float(errors.mean()),
        "error_rate": float(wrong.mean()) if decided.any() else float("nan"),
    }
