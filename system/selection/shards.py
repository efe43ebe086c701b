"""Pure functions of cached-score greedy selection, shaped for a selector plus W sharded workers.

A worker holds a shard Φ_w [N_w, k] and its cached scores s_i = φ_iᵀV⁻¹φ_i; the selector alone
holds V⁻¹. One pick (science.md, "Distributed greedy selection"):

1. every worker proposes :func:`shard_argmax` of its untaken rows; the selector keeps
   :func:`merge_argmax` of the proposals (largest score, ties → smallest (worker, index));
2. the selector folds the winner into V⁻¹ (``DesignState.update``) and broadcasts (z, c);
3. every worker calls :func:`update_shard_scores`: s_i ← s_i − (φ_iᵀz)²/c, one mat-vec.

By Sherman–Morrison, φᵀ(V⁻¹ − zzᵀ/c)φ = φᵀV⁻¹φ − (φᵀz)²/c, so the cached scores stay exact and the
single-process greedy is the same procedure with W = 1: both return the same pick order.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def score_shard(phi_shard: Tensor, v_inv: Tensor) -> Tensor:
    """s_i = φ_iᵀ V⁻¹ φ_i for every row of ``phi_shard`` [N_w, k] → [N_w] (in V⁻¹'s dtype, ≥ 0)."""
    features = phi_shard.to(v_inv.dtype)
    return ((features @ v_inv) * features).sum(dim=-1).clamp_min(0.0)


def update_shard_scores(scores: Tensor, phi_shard: Tensor, z: Tensor, c: float) -> Tensor:
    """Cached scores after V⁻¹ ← V⁻¹ − zzᵀ/c: s_i − (φ_iᵀz)²/c, one mat-vec [N_w, k]·[k] (new tensor)."""
    projections = phi_shard.to(z.dtype) @ z
    return (scores - projections.square() / c).clamp_min(0.0)


def shard_argmax(scores: Tensor, taken: Tensor) -> tuple[int, float] | None:
    """(local index, score) of the largest score among rows with ``taken`` False; first index on ties."""
    masked = scores.masked_fill(taken, float("-inf"))
    if masked.numel() == 0 or bool(taken.all()):
        return None
    index = int(torch.argmax(masked))
    best = float(masked[index])
    first = int(torch.nonzero(masked == best)[0])
    return first, best


def merge_argmax(candidates: Sequence[tuple[int, int, float]]) -> tuple[int, int, float]:
    """The winning ``(worker, index, score)``: largest score, ties broken by smallest (worker, index).

    Raises:
        ValueError: when no worker proposed anything (every row taken).
    """
    if not candidates:
        raise ValueError("merge_argmax: no candidates (every pair already taken)")
    return min(candidates, key=lambda cand: (-cand[2], cand[0], cand[1]))
