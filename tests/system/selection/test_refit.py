"""Offline selection with a pool kept across refits (:mod:`system.selection.refit`) against an eager implementation
written here: refit, rebuild V⁻¹ by inversion, rescore every row after each refit and after every pick."""

from __future__ import annotations

from pathlib import Path

import pytest
import scipy.linalg
import torch

from system.selection import DesignState, get_strategy
from system.selection.ensemble import draw_anchors, fit_heads
from system.selection.logistic_fit import fit_linear_dpo
from system.selection.offline import OfflinePool, select_offline
from system.selection.refit import RefitPool, inverse_growth


def _spd(dim: int, generator: torch.Generator, scale: float) -> torch.Tensor:
    factor = torch.randn(dim, 3 * dim, generator=generator, dtype=torch.float64)
    return torch.eye(dim, dtype=torch.float64) + scale * factor @ factor.T / dim


def _bradley_terry(rows: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phi = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    truth = 2.0 * torch.randn(dim, generator=generator, dtype=torch.float64)
    return phi, torch.rand(rows, generator=generator, dtype=torch.float64) < torch.sigmoid(phi @ truth)


def _offline(phi: torch.Tensor, prefer_first: torch.Tensor, strategy: str, budget: int, batch: int) -> list[int]:
    labels = [1 if bool(first) else 2 for first in prefer_first]
    pool = OfflinePool(Path("pool"), [{} for _ in labels], [str(i) for i in range(len(labels))], labels,
                       list(range(1, len(labels) + 1)))
    rows = select_offline(pool, phi, get_strategy(strategy), budget, batch, DesignState(phi.shape[1]), seed=3)
    return [int(row["pair_id"]) for row in rows]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_growth_is_the_largest_generalised_eigenvalue_and_bounds_every_quadratic_form(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    old_v, new_v = _spd(7, generator, 1.0), _spd(7, generator, 3.0)
    old_inv, new_inv = torch.linalg.inv(old_v), torch.linalg.inv(new_v)
    growth = inverse_growth(old_inv, new_inv)
    assert growth == pytest.approx(scipy.linalg.eigh(new_inv.numpy(), old_inv.numpy(), eigvals_only=True).max(),
                                   rel=1e-10)
    x = torch.randn(5000, 7, generator=generator, dtype=torch.float64)
    ratios = ((x @ new_inv) * x).sum(1) / ((x @ old_inv) * x).sum(1)
    assert float(ratios.max()) <= growth * (1 + 1e-12) and float(ratios.max()) > 0.5 * growth


def test_carried_bounds_bound_every_exact_score_after_a_refit() -> None:
    """After a greedy batch under weights w₁ and V₁, a new V₂ and w₂: every row's starting score is ≥ its exact
    w₂·φᵀV₂⁻¹φ, and the rows scored exactly are a minority."""
    generator = torch.Generator().manual_seed(4)
    phi = torch.randn(2000, 6, generator=generator, dtype=torch.float64)
    rule = get_strategy("adpo_plus")
    pool = RefitPool(phi)
    first = torch.rand(2000, generator=generator, dtype=torch.float64) / 4
    state = DesignState(6)
    state.rebuild(rule.design_rows(phi[:50], first[:50]))
    taken = torch.zeros(2000, dtype=torch.bool)
    pool.next_batch(rule, first, taken)
    picks = rule.pick(pool, 8, state, seed=0)
    taken[picks.indices] = True
    second = (first * torch.exp(0.3 * torch.randn(2000, generator=generator, dtype=torch.float64))).clamp_max(0.25)
    state.rebuild(rule.design_rows(phi[picks.indices + list(range(50))], second[picks.indices + list(range(50))]))
    pool.next_batch(rule, second, taken)
    pool.begin(state.v_inv)
    exact = second * ((phi @ state.v_inv) * phi).sum(1)
    starting = pool.shard.scores
    assert bool((starting[~taken] >= exact[~taken] * (1 - 1e-12)).all())
    assert bool(starting[taken].eq(float("-inf")).all())
    assert int((pool.shard.fresh >= 0).sum()) < 1000


def _eager_adpo_plus(phi: torch.Tensor, prefer_first: torch.Tensor, budget: int, batch: int) -> list[int]:
    """ADPO+ offline, eagerly: before each batch θ̂ on the revealed labels, w = μ(1 − μ), V⁻¹ = (I + Σ w φφᵀ)⁻¹ over
    the picks; each pick is the argmax of w·φᵀV⁻¹φ over every untaken row, then V⁻¹ by Sherman–Morrison."""
    picked: list[int] = []
    theta = torch.zeros(phi.shape[1], dtype=torch.float64)
    while len(picked) < budget:
        theta = fit_linear_dpo(phi[picked], prefer_first[picked], 1.0, init=theta)
        mu = torch.sigmoid(phi @ theta)
        weights = mu * (1 - mu)
        design = phi * weights.sqrt().unsqueeze(-1)
        v_inv = torch.linalg.inv(torch.eye(phi.shape[1], dtype=torch.float64) + design[picked].T @ design[picked])
        for _ in range(min(batch, budget - len(picked))):
            scores = ((design @ v_inv) * design).sum(1)
            scores[picked] = -1.0
            best = int(torch.argmax(scores))
            z = v_inv @ design[best]
            v_inv = v_inv - torch.outer(z, z) / (1 + design[best] @ z)
            picked.append(best)
    return picked


def _eager_ensemble(phi: torch.Tensor, prefer_first: torch.Tensor, budget: int, batch: int) -> list[int]:
    """The ensemble offline, eagerly: before each batch the 8 anchored heads on the revealed labels, then the top
    ``batch`` untaken rows by (Var_m P_m, mean_m P_m(1 − P_m), −index) over every row."""
    picked: list[int] = []
    anchors = draw_anchors(8, phi.shape[1], 1.0, seed=3)
    thetas = anchors
    while len(picked) < budget:
        thetas = fit_heads(phi[picked], prefer_first[picked], anchors, 1.0, init=thetas).thetas
        probs = torch.sigmoid(phi @ thetas.T).numpy()
        disagreement, uncertainty = probs.var(axis=1), (probs * (1 - probs)).mean(axis=1)
        order = sorted(set(range(phi.shape[0])) - set(picked), key=lambda i: (-disagreement[i], -uncertainty[i], i))
        picked += order[: min(batch, budget - len(picked))]
    return picked


@pytest.mark.parametrize(("strategy", "eager"), [("adpo_plus", _eager_adpo_plus), ("ensemble", _eager_ensemble)])
@pytest.mark.parametrize("seed", [0, 1])
def test_offline_picks_equal_an_eager_full_rescoring(strategy: str, eager, seed: int) -> None:
    """12 refits over a continuous random pool (no near ties: the picks cannot hinge on rounding)."""
    phi, prefer_first = _bradley_terry(600, 6, seed)
    assert _offline(phi, prefer_first, strategy, 96, 8) == eager(phi, prefer_first, 96, 8)


def test_adpo_over_several_batches_equals_one_greedy_batch() -> None:
    """ADPO reads no label: carrying bounds from batch to batch (V only grows, ρ ≤ 1) changes no pick."""
    phi, prefer_first = _bradley_terry(500, 5, seed=7)
    assert _offline(phi, prefer_first, "adpo", 60, 7) == _offline(phi, prefer_first, "adpo", 60, 60)


def test_a_pool_of_identical_rows_breaks_ties_by_the_first_index() -> None:
    """Two kinds of row, e₁ and e₂, alternating: every score is a product with 0s and 1s, so rows of a kind tie
    exactly, and the kinds too while their weights agree (the first batch, θ̂ = 0): the first index wins every tie."""
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).repeat(30, 1)
    prefer_first = torch.ones(60, dtype=torch.bool)
    picks = _offline(phi, prefer_first, "adpo_plus", 12, 3)
    assert picks == _eager_adpo_plus(phi, prefer_first, 12, 3)
    assert picks[:3] == [0, 1, 2]
    for kind in (0, 1):  # rows of a kind are picked in index order, from the first
        rows = [index for index in picks if index % 2 == kind]
        assert rows == list(range(kind, 2 * len(rows), 2))
