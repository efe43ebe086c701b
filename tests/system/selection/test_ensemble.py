"""The ensemble strategy against independent computations: its fits (sklearn, scipy), its single-head limit
(uncertainty sampling on that head's margin), where its disagreement goes on a Bradley–Terry pool, and its
offline path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from system.errors import DataError
from system.selection import DesignState, LocalPool, get_strategy, rank_rows
from system.selection.ensemble import EnsembleHeads, draw_anchors, fit_heads
from system.selection.offline import load_pool, select_offline
from system.selection.shards import blocked_rows
from system.selection.strategies.ensemble import EnsembleStrategy


def _bradley_terry(rows: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phi = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    truth = torch.randn(dim, generator=generator, dtype=torch.float64)
    return phi, torch.rand(rows, generator=generator, dtype=torch.float64) < torch.sigmoid(phi @ truth)


@pytest.mark.parametrize("rows", [40, 6])  # k ≤ n (Newton in k) and k > n (Woodbury in n)
def test_heads_without_anchor_offset_equal_sklearn_and_anchored_heads_equal_scipy(rows: int) -> None:
    phi, prefer_first = _bradley_terry(rows, 10, seed=rows)
    anchors = draw_anchors(3, 10, 0.5, seed=4)
    heads = fit_heads(phi, prefer_first, torch.cat([torch.zeros(1, 10, dtype=torch.float64), anchors]), 0.5)
    reference = LogisticRegression(C=1 / 0.5, fit_intercept=False, tol=1e-12, max_iter=10_000)
    reference.fit(phi.numpy(), prefer_first.numpy().astype(int))
    np.testing.assert_allclose(heads.thetas[0].numpy(), reference.coef_[0], rtol=1e-5, atol=1e-5)
    signs = prefer_first.numpy() * 2.0 - 1.0
    for anchor, theta in zip(anchors.numpy(), heads.thetas[1:].numpy(), strict=True):
        def objective(t: np.ndarray, anchor: np.ndarray = anchor) -> float:
            return float(np.logaddexp(0.0, -signs * (phi.numpy() @ t)).sum() + 0.25 * np.square(t - anchor).sum())

        expected = minimize(objective, anchor, method="BFGS", options={"gtol": 1e-10}).x
        np.testing.assert_allclose(theta, expected, rtol=1e-4, atol=1e-5)


def test_anchors_are_prior_draws_reproducible_from_the_seed() -> None:
    anchors = draw_anchors(4000, 3, 4.0, seed=1)
    torch.testing.assert_close(anchors, draw_anchors(4000, 3, 4.0, seed=1))
    assert anchors.std().item() == pytest.approx(0.5, rel=0.05)  # N(0, I/λ), λ = 4
    assert fit_heads(torch.zeros(0, 3), torch.zeros(0, dtype=torch.bool), anchors[:2], 4.0).thetas.equal(anchors[:2])


def test_one_head_without_prior_ranks_by_its_own_margin_uncertainty() -> None:
    """M = 1: every disagreement is 0, so the picks are the pairs with the largest σ(h)(1 − σ(h)), i.e. the
    smallest |h| of the head — computed here from sklearn's unregularised-in-effect fit."""
    phi, prefer_first = _bradley_terry(300, 5, seed=2)
    labelled, pool = phi[:60], phi[60:]
    head = fit_heads(labelled, prefer_first[:60], torch.zeros(1, 5, dtype=torch.float64), 1e-6)
    strategy = EnsembleStrategy()
    strategy.heads = head
    picks = strategy.pick(LocalPool(pool, blocked_rows(pool)), 12, DesignState(5), seed=0)
    reference = LogisticRegression(C=1e6, fit_intercept=False, tol=1e-12, max_iter=10_000)
    reference.fit(labelled.numpy(), prefer_first[:60].numpy().astype(int))
    margins = np.abs(pool.numpy() @ reference.coef_[0])
    assert picks.indices == np.argsort(margins, kind="stable")[:12].tolist()
    assert picks.scores == [0.0] * 12


def test_disagreement_falls_where_there_are_no_labels() -> None:
    """A Bradley–Terry pool in two regions (pairs whose features live on the first three coordinates, and on
    the last three): before any label the heads disagree alike on both; after 300 labels from region A they
    agree there, and the picks all come from region B."""
    generator = torch.Generator().manual_seed(0)
    region_a = torch.cat([torch.randn(400, 3, generator=generator), torch.zeros(400, 3)], 1).double()
    region_b = torch.cat([torch.zeros(400, 3), torch.randn(400, 3, generator=generator)], 1).double()
    truth = torch.tensor([1.0, -2.0, 0.5, 1.5, 1.0, -1.0], dtype=torch.float64)
    prefer_first = torch.rand(300, generator=generator, dtype=torch.float64) < torch.sigmoid(region_a[:300] @ truth)
    strategy = get_strategy("ensemble")
    assert isinstance(strategy, EnsembleStrategy)
    strategy.learn(torch.zeros(0, 6, dtype=torch.float64), torch.zeros(0, dtype=torch.bool), seed=3)
    assert strategy.heads is not None
    prior_a, prior_b = (strategy.heads.keys(region)[:, 0].mean().item() for region in (region_a, region_b))
    assert prior_a == pytest.approx(prior_b, rel=0.3)
    strategy.learn(region_a[:300], prefer_first, seed=3)
    assert strategy.heads is not None
    after_a, after_b = (strategy.heads.keys(region)[:, 0].mean().item() for region in (region_a[300:], region_b))
    assert after_a < 0.1 * after_b and after_b == pytest.approx(prior_b, rel=0.3)
    pool = torch.cat([region_a[300:], region_b])
    picks = strategy.pick(LocalPool(pool, blocked_rows(pool)), 20, DesignState(6), seed=0)
    assert min(picks.indices) >= 100  # region B's rows


def test_rank_rows_is_a_lexicographic_sort_with_ties_to_the_smaller_index() -> None:
    keys = torch.tensor([[0.5, 0.1], [0.9, 0.0], [0.5, 0.3], [0.9, 0.0], [0.7, 0.2], [0.5, 0.3]], dtype=torch.float64)
    blocked = torch.tensor([False, False, False, False, True, False])
    expected = sorted((i for i in range(6) if not blocked[i]), key=lambda i: (-keys[i, 0], -keys[i, 1], i))
    for budget in range(6):
        assert rank_rows(keys, blocked, budget).tolist() == expected[:budget]
    assert EnsembleHeads(torch.zeros(2, 6, dtype=torch.float64)).keys(keys.repeat(1, 3))[:, 0].eq(0).all()


def test_offline_ensemble_learns_every_label_revealed_before_the_batch(tmp_path) -> None:
    phi, prefer_first = _bradley_terry(40, 3, seed=5)
    pool_path = tmp_path / "pool.jsonl"
    pool_path.write_text("".join(f'{{"pair_id": "p{i}", "phi": {row.tolist()}, "label": {1 if first else 2}}}\n'
                                 for i, (row, first) in enumerate(zip(phi, prefer_first, strict=True))))
    strategy = get_strategy("ensemble")
    rows = select_offline(load_pool(pool_path), phi, strategy, 12, 4, DesignState(3), seed=7)
    picked = [int(row["pair_id"][1:]) for row in rows]
    expected = fit_heads(phi[picked[:8]], prefer_first[picked[:8]], draw_anchors(8, 3, 1.0, seed=7), 1.0)
    assert isinstance(strategy, EnsembleStrategy) and strategy.heads is not None
    torch.testing.assert_close(strategy.heads.thetas, expected.thetas, rtol=1e-4, atol=1e-4)  # warm vs cold start
    unlabelled = tmp_path / "unlabelled.jsonl"
    unlabelled.write_text("".join(f'{{"pair_id": "p{i}", "phi": {row.tolist()}}}\n' for i, row in enumerate(phi)))
    with pytest.raises(DataError, match="strategy ensemble learns from labels, but the pool has no 'label' column"):
        select_offline(load_pool(unlabelled), phi, get_strategy("ensemble"), 4, 4, DesignState(3))
