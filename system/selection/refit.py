"""Offline selection's pool, kept from one batch to the next so that an ADPO+ refit rescores only what changed.

Between two batches of offline selection ADPO+ refits θ̂, so every weight w_i = μ_i(1 − μ_i) and V change.
Rescoring all N rows costs O(N·k²) per refit, 4,096 refits over N = 2^17 rows in the offline benchmark.
:class:`RefitPool` instead carries an upper bound of every row's score from one batch to the next, for greedy
strategies whose design rows scale φ (x_i = a_i·φ_i: ADPO+ with a = √w, ADPO with a = 1). With A = V_old⁻¹ (V⁻¹
after the last greedy batch's picks) and B = V_new⁻¹, ρ = max_x xᵀBx / xᵀAx = λ_max(L⁻¹BL⁻ᵀ), A = LLᵀ
(:func:`inverse_growth`, one k × k eigenproblem), so

    a_new,i²·φ_iᵀV_new⁻¹φ_i ≤ ρ·(a_new,i² / a_old,i²)·s_i,

s_i the last batch's cached bound of a_old,i²·φ_iᵀV_old⁻¹φ_i. These bounds start the lazy greedy of
:class:`~system.selection.shards.Shard`, which scores exactly only the rows whose bound reaches the best exact score
so far.

Every carried bound is inflated by the relative ``SLACK`` so that rounding cannot push it below the exact score. The
exact scores are computed by the same expressions as a full pass (only grouped in other GEMMs), so the picks are
those of rescoring every row after every refit, barring floating-point near-ties (tested against an eager
implementation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from system.selection.registry import Strategy
from system.selection.shards import Proposal, Ranked, RowMap, RowScorer, Shard, blocked_rows

SLACK = 1e-6
"""Relative inflation of every carried bound (far above the rounding of a k-term dot product or a k × k eigenvalue)."""


def inverse_growth(old_v_inv: Tensor, new_v_inv: Tensor) -> float:
    """ρ = max_x xᵀBx / xᵀAx for A = ``old_v_inv``, B = ``new_v_inv`` [k, k] symmetric positive definite: the largest
    eigenvalue of L⁻¹BL⁻ᵀ, A = LLᵀ, so xᵀV_new⁻¹x ≤ ρ·xᵀV_old⁻¹x for every x (inf when A is not positive definite)."""
    chol, info = torch.linalg.cholesky_ex(old_v_inv)
    if int(info) != 0:
        return math.inf
    left = torch.linalg.solve_triangular(chol, new_v_inv, upper=False)  # L⁻¹B
    pencil = torch.linalg.solve_triangular(chol, left.T, upper=False)  # L⁻¹BL⁻ᵀ, as (L⁻¹B)ᵀ = BL⁻ᵀ
    return float(torch.linalg.eigvalsh(0.5 * (pencil + pencil.T)).max())


def design_map(rule: Strategy, weights: Tensor | None) -> RowMap | None:
    """The shard's map from stored rows φ (and their indices) to ``rule``'s design rows; None for the base rows φ."""
    if type(rule).design_rows is Strategy.design_rows:
        return None
    return lambda rows, indices: rule.design_rows(rows, None if weights is None else weights[indices])


class RefitPool:
    """The one-process :class:`~system.selection.shards.ShardedPool` of offline selection, kept across its batches.

    Each batch starts with :meth:`next_batch` (the batch's rule, plug-in weights and the rows already picked); the
    rule then picks through the usual pool methods. The shard stores φ and maps rows to the rule's design rows
    on demand (``Strategy.design_rows`` acts row by row), so a batch never forms the N design rows.

    Args:
        phi: [N, k] features φ in the design's dtype (validated finite).
    """

    def __init__(self, phi: Tensor) -> None:
        self.shard = Shard(phi)
        self._zero = blocked_rows(phi)
        self._blocked = self._zero
        self._scale: Tensor | None = None
        """[N] squared scales a² of the current design rows x = a·φ, or None (not a scaling of φ)."""
        self._carried: tuple[Tensor, Tensor] | None = None
        """(V⁻¹ after the last greedy batch's picks, bounds [N] of φᵢᵀV⁻¹φᵢ under it), once a greedy batch ran."""
        self._greedy = False

    def next_batch(self, rule: Strategy, weights: Tensor | None, exclude: Tensor) -> int:
        """Start a batch of ``rule`` with plug-in ``weights`` [N] (or None); ``exclude`` [N]: rows picked earlier.

        A row is blocked when its φ is zero or its weight is 0 (its design row √w·φ is then zero), or excluded.

        Returns:
            the number of rows not excluded but blocked for a zero design row.
        """
        self._carry_bounds()
        scale = rule.row_scales(weights)
        self._scale = None if scale is None else torch.as_tensor(scale, dtype=self.shard.rows.dtype).square()
        self.shard.design = design_map(rule, weights)
        zero = self._zero if weights is None else self._zero | (weights == 0)
        self._blocked = zero | exclude
        return int((zero & ~exclude).sum())

    def _carry_bounds(self) -> None:
        """After a greedy batch, turn its cached bounds of a²·φᵀV⁻¹φ into bounds of φᵀV⁻¹φ under V⁻¹ after its picks."""
        if not self._greedy:
            return
        self._greedy = False
        if self._scale is None:
            self._carried = None
            return
        self._carried = (self.shard.final_v_inv(), self.shard.scores / self._scale)

    def blocked(self) -> Tensor:
        return self._blocked

    def row(self, index: int) -> Tensor:
        return self.shard.design_rows(slice(index, index + 1))[0]

    def begin(self, v_inv: Tensor) -> list[Proposal | None]:
        """Greedy from V⁻¹: rows start from their carried bounds (every row is scored when none are carried)."""
        bounds = None
        if self._carried is not None and self._scale is not None:
            old_v_inv, unscaled = self._carried
            growth = inverse_growth(old_v_inv, v_inv.to(old_v_inv.dtype))
            if math.isfinite(growth):
                bounds = unscaled * (self._scale * (growth * (1.0 + SLACK)))
                # a row blocked then (−inf) but not now was never bounded: it must be scored
                bounds = torch.where(torch.isneginf(bounds) & ~self._blocked, math.inf, bounds)
        self._greedy = True
        return [self.shard.begin(v_inv, self._blocked, bounds)]

    def update(self, z: Tensor, c: float, taken: int) -> list[Proposal | None]:
        return [self.shard.update(z, c, taken)]

    def top(self, scorer: RowScorer, budget: int) -> list[Ranked]:
        return self.shard.top(scorer, budget, self._blocked)
