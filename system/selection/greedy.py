"""Single-process cached-score greedy selection: the sharded procedure of :mod:`.shards` with one shard."""

from __future__ import annotations

from torch import Tensor

from system.selection.design import DesignState
from system.selection.registry import Picks
from system.selection.shards import score_shard, shard_argmax, update_shard_scores


def greedy_select(features: Tensor, budget: int, state: DesignState, blocked: Tensor) -> Picks:
    """Greedy D-optimal picks: argmax φᵀV⁻¹φ, fold the pick into V, repeat ``budget`` times.

    Scores are computed once (O(N·k²)) and then kept exact by one mat-vec per pick (O(N·k + k²)),
    never by re-inverting V.

    Args:
        features: [N, k] rows x_i (φ_i, or √w_i·φ_i for weighted designs).
        budget: number of picks (≤ number of unblocked rows).
        state: design state, updated in place with every pick.
        blocked: [N] bool, rows that may not be picked.

    Returns:
        Picks in order with the score x_iᵀV⁻¹x_i each had when picked.
    """
    taken = blocked.clone()
    scores = score_shard(features, state.v_inv)
    indices: list[int] = []
    picked_scores: list[float] = []
    for _ in range(budget):
        best = shard_argmax(scores, taken)
        if best is None:
            break
        index, score = best
        taken[index] = True
        indices.append(index)
        picked_scores.append(score)
        z, c = state.update(features[index])
        scores = update_shard_scores(scores, features, z, c)
    return Picks(indices, picked_scores)
