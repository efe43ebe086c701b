"""``random``: uniform sampling without replacement, the baseline every active strategy must beat."""

from __future__ import annotations

import torch
from torch import Tensor

from system.selection.design import DesignState
from system.selection.registry import Picks, PoolInputs, Strategy, register_strategy


@register_strategy("random")
class UniformStrategy(Strategy):
    """Uniformly random pairs (seeded); V is still updated so log det V is comparable across strategies."""

    feature_kind = "embedding"

    def select(self, pool: PoolInputs, budget: int, state: DesignState, blocked: Tensor, seed: int) -> Picks:
        generator = torch.Generator().manual_seed(seed)
        allowed = torch.nonzero(~blocked).flatten()
        order = allowed[torch.randperm(allowed.numel(), generator=generator)[:budget]].tolist()
        scores = []
        for index in order:
            scores.append(float(state.score(pool.phi[index : index + 1])[0]))
            state.update(pool.phi[index])
        return Picks(order, scores)
