"""``ensemble``: SEA-style exploration, the disagreement of anchored reward heads (:mod:`system.selection.ensemble`)."""

from __future__ import annotations

import torch
from torch import Tensor

from system.selection.design import DesignState
from system.selection.ensemble import EnsembleHeads, draw_anchors, fit_heads
from system.selection.registry import Picks, Strategy, register_strategy
from system.selection.shards import ShardedPool


@register_strategy("ensemble")
class EnsembleStrategy(Strategy):
    """M anchored linear heads over the policy's embedding features φ (ADPO's), refit on every label before each
    pick step; picks the top ``budget`` pairs by the heads' disagreement Var_m P_m(y1≻y2), scored on the feature
    workers (the heads travel there once per pick step). V is still updated so log det V is comparable.

    Change ``num_heads`` (M) or ``prior_l2`` (λ: anchors θ_m⁰ ~ N(0, I/λ), ridge λ) by subclassing and
    registering the subclass. λ = 1 matches ``selection.plugin_l2``: ‖φ‖ ≤ 2, so a prior margin θ⁰ᵀφ has
    standard deviation ‖φ‖/√λ ≤ 2 — preferences from σ(−2) ≈ 0.12 to σ(2) ≈ 0.88 before any label.
    """

    feature_kind = "embedding"
    learns_from_labels = True
    num_heads = 8
    prior_l2 = 1.0

    def __init__(self) -> None:
        self.heads: EnsembleHeads | None = None

    def learn(self, rows: Tensor, prefer_first: Tensor, seed: int) -> None:
        """Refit every head on all labels, warm-started from the previous fit of this instance."""
        anchors = draw_anchors(self.num_heads, rows.shape[1], self.prior_l2, seed)
        previous = self.heads.thetas if self.heads is not None and self.heads.thetas.shape == anchors.shape else None
        self.heads = fit_heads(rows, prefer_first, anchors, self.prior_l2, init=previous)

    def pick(self, pool: ShardedPool, budget: int, state: DesignState, seed: int) -> Picks:
        if self.heads is None:  # no labels seen: the heads are their anchors
            self.learn(torch.zeros(0, state.dim, dtype=torch.float64), torch.zeros(0, dtype=torch.bool), seed)
        assert self.heads is not None
        ranked = pool.top(self.heads, budget)
        for index, _ in ranked:
            state.update(pool.row(index))
        return Picks([index for index, _ in ranked], [keys[0] for _, keys in ranked])
