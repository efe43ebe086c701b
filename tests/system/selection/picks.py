"""Single-process picks through what the product runs for each batch of offline selection."""

from __future__ import annotations

import torch

from system.selection import DesignState, PoolInputs, Strategy, get_strategy, pick_validated, validate_pool


def local_picks(
    phi: torch.Tensor, budget: int, reg: float, strategy: str | Strategy, weights: torch.Tensor | None = None,
    seed: int = 0, state: DesignState | None = None,
) -> list[int]:
    """Indices of ``budget`` picks of ``strategy`` over features ``phi`` [N, k] (plug-in ``weights`` [N]) from
    V = ``reg``·I (or ``state``, updated in place), as ``select_offline`` picks a batch: validate, then pick."""
    state = DesignState(phi.shape[1], reg) if state is None else state
    pool = PoolInputs(phi, weights)
    validate_pool(pool, state)
    rule = get_strategy(strategy) if isinstance(strategy, str) else strategy
    return pick_validated(pool, budget, state, rule, seed)[0].indices
