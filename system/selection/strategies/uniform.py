"""``random``: uniform sampling without replacement, the baseline every active strategy must beat."""

from __future__ import annotations

import torch

from system.selection.design import DesignState
from system.selection.registry import Picks, Strategy, register_strategy
from system.selection.shards import ShardedPool


@register_strategy("random")
class UniformStrategy(Strategy):
    """Uniformly random unblocked pairs, seeded by the round's seed (so rounds differ); V is still
    updated so log det V is comparable across strategies."""

    feature_kind = "embedding"

    def pick(self, pool: ShardedPool, budget: int, state: DesignState, seed: int) -> Picks:
        generator = torch.Generator().manual_seed(seed)
        allowed = torch.nonzero(~pool.blocked()).flatten()
        order = allowed[torch.randperm(allowed.numel(), generator=generator)[:budget]].tolist()
        scores = []
        for index in order:
            _, c = state.update(pool.row(index))
            scores.append(c - 1.0)  # xᵀV⁻¹x before the update
        return Picks(order, scores)
