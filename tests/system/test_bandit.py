"""The DPO-vs-IPO 3-armed bandit (docs/method.md, "Losses"): DPO recovers π* ∝ πref·exp(s/β); IPO settles on a
different, predictable policy."""

from __future__ import annotations

import math

import pytest
import torch

from system.bandit import BanditProblem, fit_policy, kl_divergence


@pytest.fixture(scope="module")
def problem() -> BanditProblem:
    return BanditProblem(scores=(10.000, 9.593, 7.800), beta=1.0)


def test_optimal_policy_by_hand(problem: BanditProblem) -> None:
    weights = [math.exp(s - 10.0) for s in problem.scores]
    expected = [w / sum(weights) for w in weights]
    assert problem.optimal_policy().tolist() == pytest.approx(expected, abs=1e-12)


def test_dpo_converges_to_optimal_policy(problem: BanditProblem) -> None:
    fit = fit_policy(problem, "dpo", iterations=60)
    assert fit.kl_to_optimal[0] > 0.1  # starts far away (uniform policy)
    assert fit.kl_to_optimal[-1] < 1e-3
    assert torch.allclose(fit.policy, problem.optimal_policy(), atol=1e-4)


def test_ipo_converges_to_its_own_fixed_point_not_to_optimal(problem: BanditProblem) -> None:
    """IPO's fixed point is πref·exp(P(y≻μ)/β): scores squashed into win rates in [0, 1]."""
    fit = fit_policy(problem, "ipo", iterations=60)
    ipo_point = problem.ipo_fixed_point()
    assert kl_divergence(ipo_point, fit.policy) < 1e-8
    # by hand: P(y≻μ) = mean_b σ(s_a − s_b) with σ(0) = ½ for b = a
    sig = [[1 / (1 + math.exp(-(sa - sb))) for sb in problem.scores] for sa in problem.scores]
    win_vs_mu = [sum(row) / 3 for row in sig]
    weights = [math.exp(w) for w in win_vs_mu]
    assert ipo_point.tolist() == pytest.approx([w / sum(weights) for w in weights], abs=1e-12)
    # the specific difference: IPO under-weights the best arm and over-weights the worst one
    optimal = problem.optimal_policy()
    assert kl_divergence(optimal, fit.policy) == pytest.approx(0.1398, abs=1e-3)
    assert fit.policy[0] < optimal[0] - 0.15
    assert fit.policy[2] > optimal[2] + 0.15
    # the ranking of the arms is still right
    assert fit.policy[0] > fit.policy[1] > fit.policy[2]
