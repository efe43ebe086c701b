"""Cached-score greedy D-optimal selection over a :class:`~system.selection.shards.ShardedPool` (any W)."""

from __future__ import annotations

from system.selection.design import DesignState
from system.selection.registry import Picks
from system.selection.shards import ShardedPool, merge_argmax


def greedy_pick(pool: ShardedPool, budget: int, state: DesignState) -> Picks:
    """Greedy D-optimal picks: argmax xᵀV⁻¹x over the shards, fold the pick into V, repeat ``budget`` times.

    Scores are computed once per shard (O(N·k²/W)) and then kept exact by one mat-vec per pick
    (O(N·k/W + k²)), never by re-inverting V.

    Returns:
        Picks (global indices) in order with the score x_iᵀV⁻¹x_i each had when picked.
    """
    proposals = pool.begin(state.v_inv)
    indices: list[int] = []
    scores: list[float] = []
    for _ in range(budget):
        best = merge_argmax(proposals)
        if best is None:
            break
        index, score, row = best
        indices.append(index)
        scores.append(score)
        z, c = state.update(row)
        proposals = pool.update(z, c, index)
    return Picks(indices, scores)

