"""The two entries of selection: :func:`select_round` (a round of the loop, over any sharded pool of design rows)
and :func:`pick_validated` (offline selection's batches over a feature matrix in one process).

A one-process pool is a :class:`~system.selection.shards.LocalPool` (one shard) of the strategy's design
rows, so the same ``Strategy.pick`` runs in one process and on the selector actor over W workers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from system.errors import SelectionError
from system.selection.design import DesignState
from system.selection.registry import Picks, PoolInputs, Strategy, get_strategy
from system.selection.shards import LocalPool, ShardedPool, blocked_rows
from system.types import SelectionResult

logger = logging.getLogger(__name__)


def _check_vector(name: str, values: Tensor | None, num_pairs: int) -> None:
    if values is None:
        return
    if values.shape != (num_pairs,):
        raise SelectionError(f"{name}: expected shape ({num_pairs},), got {tuple(values.shape)}")
    bad = torch.nonzero(~torch.isfinite(values)).flatten()
    if bad.numel():
        raise SelectionError(f"{name}: non-finite value at row {int(bad[0])}")


def validate_pool(pool: PoolInputs, state: DesignState) -> Tensor:
    """Check shapes and finiteness; return the [N] mask of zero-norm rows (pairs that carry no information).

    Raises:
        SelectionError: non-2D or wrongly sized φ, NaN/inf anywhere, negative weights.
    """
    phi = pool.phi
    if phi.ndim != 2:
        raise SelectionError(f"features: expected a [N, k] matrix, got shape {tuple(phi.shape)}")
    if phi.shape[1] != state.dim:
        raise SelectionError(f"features: dimension {phi.shape[1]} does not match the design state's {state.dim}")
    bad_rows = torch.nonzero(~torch.isfinite(phi).all(dim=1)).flatten()
    if bad_rows.numel():
        raise SelectionError(f"features: NaN/inf in row {int(bad_rows[0])} ({bad_rows.numel()} rows affected)")
    _check_vector("weights", pool.weights, phi.shape[0])
    if pool.weights is not None and bool((pool.weights < 0).any()):
        raise SelectionError(f"weights: negative plug-in weight at row {int(torch.nonzero(pool.weights < 0)[0])}")
    return blocked_rows(phi)


def pick_validated(
    pool: PoolInputs,
    budget: int,
    state: DesignState,
    rule: Strategy,
    seed: int = 0,
    exclude: Tensor | None = None,
) -> tuple[Picks, int]:
    """Block the zero-norm design rows of a ``pool`` checked by :func:`validate_pool` and run ``rule``: (picks,
    zero-norm rows skipped); ``state`` is updated with each pick. What offline selection runs for each batch.

    ``exclude`` [N] bool marks rows that are out of the pool (already picked in an earlier batch): they are
    never picked and do not count as selectable, but indices stay global, so a caller selecting batch after
    batch validates Φ [N, k] once and passes one mask instead of copying the remaining rows each time.

    Raises:
        SelectionError: more picks asked than selectable rows, or a wrongly sized ``exclude``.
    """
    rows = rule.design_rows(pool.phi.to(state.dtype), pool.weights)
    zero_norm = blocked_rows(rows)  # as on the workers: a row is blocked when the strategy's row is zero
    excluded = torch.zeros_like(zero_norm) if exclude is None else exclude
    _check_vector("exclude", excluded, rows.shape[0])
    skipped = check_budget(budget, rows.shape[0] - int(excluded.sum()), int((zero_norm & ~excluded).sum()))
    return rule.pick(LocalPool(rows, zero_norm | excluded), budget, state, seed), skipped


def check_budget(budget: int, num_pairs: int, skipped: int) -> int:
    """Check that ``budget`` picks fit the ``num_pairs − skipped`` selectable pairs; returns ``skipped``.

    Raises:
        SelectionError: negative budget or more picks than selectable pairs.
    """
    selectable = num_pairs - skipped
    if budget < 0:
        raise SelectionError(f"budget must be ≥ 0 (got {budget})")
    if budget > selectable:
        raise SelectionError(
            f"budget {budget} exceeds the {selectable} selectable pairs "
            f"(pool of {num_pairs}, {skipped} zero-norm skipped)"
        )
    if skipped:
        logger.warning("skipping %d zero-norm pairs (identical features)", skipped)
    return skipped


def select_round(
    pool: ShardedPool, pair_ids: Sequence[str], labelled_rows: Tensor, budget: int, strategy: str | Strategy,
    round_index: int, reg: float, refactor_every: int, seed: int, device: torch.device | str | None = None,
) -> tuple[SelectionResult, DesignState]:
    """One round of the loop's selection over a (sharded) pool of design rows; what the selector actor and the
    in-process parts both run.

    V starts as λI + Σ_j x_j x_jᵀ over ``labelled_rows`` [L, k] — every pair labelled in earlier rounds, its row
    recomputed under the current policy (ActiveDPO paper, Prop. 1) — and ``strategy`` picks ``budget`` rows of ``pool``
    (row i is pair ``pair_ids[i]``) with the seed ``seed + round_index``, so a seeded strategy draws differently
    every round; ``reg`` is λ, ``refactor_every`` the design state's refactorisation period (``selection``
    config); V and V⁻¹ live on ``device`` (default the CPU). Returns the picks and the design state after them.

    The loop presents every labelled pair chosen-first, so ``labelled_rows`` are φ(chosen) − φ(rejected) and a
    strategy that learns from labels (:meth:`Strategy.learn`) gets them with "y1 preferred" throughout (the
    design V is unchanged by the orientation: x xᵀ = (−x)(−x)ᵀ).

    Raises:
        SelectionError: more picks asked than selectable rows.
    """
    rule = get_strategy(strategy) if isinstance(strategy, str) else strategy
    state = DesignState(labelled_rows.shape[1], reg, refactor_every=refactor_every, device=device)
    state.rebuild(labelled_rows)
    if rule.learns_from_labels:
        rule.learn(labelled_rows, torch.ones(labelled_rows.shape[0], dtype=torch.bool), seed)
    skipped = check_budget(budget, len(pair_ids), int(pool.blocked().sum()))
    picks = rule.pick(pool, budget, state, seed + round_index)
    result = SelectionResult(
        pair_ids=tuple(pair_ids[index] for index in picks.indices), scores=tuple(picks.scores), strategy=rule.name,
        round=round_index, skipped_zero_norm=skipped, extra={"logdet": state.logdet()},
    )
    return result, state


def selection_record(state: DesignState, next_round: int, selected_ids: Sequence[str]) -> dict[str, Any]:
    """What a selector saves after a round (and a resumed run restores): the design state, the next round's
    index and every pair id selected so far, in pick order; loadable with ``torch.load(weights_only=True)``."""
    return {"design": state.state_dict(), "round": next_round, "selected_ids": list(selected_ids)}
