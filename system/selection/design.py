"""The design matrix V = λI + Σ_j w_j φ_j φ_jᵀ of the selected pairs, kept as V⁻¹ in float64.

Every greedy strategy of the ADPO and ActiveDPO papers (docs/method.md, "The design matrix
and its updates") scores a candidate by φᵀV⁻¹φ (the squared V⁻¹-norm of its
feature, equal to the log-det gain log(1 + φᵀV⁻¹φ) by the matrix determinant lemma) and, after a
pick, folds φ into V. :class:`DesignState` does the fold with the Sherman–Morrison identity

    V⁻¹ ← V⁻¹ − z zᵀ / c,   z = V⁻¹ x,   c = 1 + xᵀ z,   x = √w φ,

an O(k²) update instead of an O(k³) inversion, and returns (z, c) so cached scores elsewhere can be
updated with one mat-vec (see :mod:`system.selection.shards`). Rank-one updates accumulate rounding
error, so every ``refactor_every`` updates V⁻¹ is recomputed from the exactly accumulated V by a
Cholesky factorisation.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from system.errors import SelectionError


class DesignState:
    """V⁻¹ (and V) of a regularised design, updated one pick at a time.

    Rank-one terms are applied lazily: a pick computes its exact (z, c) against the folded V⁻¹ plus
    the pending terms (Woodbury, O(k² + t·k) for t pending), and every ``fold_every`` picks the pending
    terms are folded into V⁻¹ and V with one rank-t GEMM each. A pick therefore reads V⁻¹ once instead
    of rewriting both k × k matrices (4 passes over 512 MiB at k = 8192). Reading :attr:`v_inv` or
    :attr:`v` folds first, so callers always see the current matrices.

    Args:
        dim: feature dimension k.
        reg: ridge λ > 0 of V = λI + Σ w φφᵀ.
        dtype: floating type of V and V⁻¹ (float64 by default: k ≤ 8192 is 512 MiB each).
        refactor_every: re-factorise V⁻¹ from V after this many rank-one updates.
        fold_every: fold pending rank-one terms into V⁻¹ and V after this many updates.
        device: where V and V⁻¹ live.
    """

    def __init__(
        self,
        dim: int,
        reg: float = 1.0,
        dtype: torch.dtype = torch.float64,
        refactor_every: int = 64,
        fold_every: int = 32,
        device: torch.device | str | None = None,
    ) -> None:
        if dim < 1:
            raise SelectionError(f"design dimension must be ≥ 1 (got {dim})")
        if not reg > 0:
            raise SelectionError(f"design regulariser selection.reg must be > 0 (got {reg})")
        self.dim = dim
        self.reg = float(reg)
        self.refactor_every = refactor_every
        eye = torch.eye(dim, dtype=dtype, device=device)
        self._v = eye * self.reg
        self._v_inv = eye / self.reg
        self._logdet = dim * math.log(self.reg)
        self.num_updates = 0
        self._pending_x = torch.empty(fold_every, dim, dtype=dtype, device=device)
        self._pending_z = torch.empty(fold_every, dim, dtype=dtype, device=device)
        self._pending_c = torch.empty(fold_every, dtype=dtype, device=device)
        self._num_pending = 0

    @property
    def dtype(self) -> torch.dtype:
        return self._v_inv.dtype

    @property
    def v_inv(self) -> Tensor:
        """V⁻¹ [k, k] with every update applied."""
        self._fold()
        return self._v_inv

    @property
    def v(self) -> Tensor:
        """V [k, k] with every update applied."""
        self._fold()
        return self._v

    def _as_features(self, phi: Tensor) -> Tensor:
        if phi.shape[-1] != self.dim:
            raise SelectionError(f"feature dimension {phi.shape[-1]} does not match the design dimension {self.dim}")
        return phi.to(dtype=self.dtype, device=self._v_inv.device)

    def _fold(self) -> None:
        """V⁻¹ ← V⁻¹ − Zᵀ diag(1/c) Z and V ← V + XᵀX for the pending rows; clears them."""
        t = self._num_pending
        if t == 0:
            return
        z, x = self._pending_z[:t], self._pending_x[:t]
        self._v_inv.addmm_(z.T, z / self._pending_c[:t].unsqueeze(-1), alpha=-1.0)
        self._v.addmm_(x.T, x)
        self._num_pending = 0

    def update(self, row: Tensor) -> tuple[Tensor, float]:
        """Add x xᵀ to V for a design row x [k] (√w φ for a weighted strategy: its ``design_rows``); return (z, c)
        with z = V⁻¹x, c = 1 + xᵀz (pre-update V⁻¹), so c − 1 = xᵀV⁻¹x is the row's score before the update."""
        x = self._as_features(row).reshape(-1)
        z = self._v_inv @ x
        t = self._num_pending
        if t:
            pending_z = self._pending_z[:t]
            z -= pending_z.T @ ((pending_z @ x) / self._pending_c[:t])
        c = 1.0 + float(x @ z)
        self._pending_x[t], self._pending_z[t], self._pending_c[t] = x, z, c
        self._num_pending += 1
        self._logdet += math.log(c)
        self.num_updates += 1
        if self._num_pending == self._pending_c.shape[0]:
            self._fold()
        if self.num_updates % self.refactor_every == 0:
            self.refactor()
        return z, c

    def rebuild(self, rows: Tensor) -> None:
        """Replace the design by V = λI + Σ_j x_j x_jᵀ over ``rows`` [L, k] (one GEMM + one Cholesky).

        How a round starts (ActiveDPO paper, Prop. 1): the rows are the labelled pairs' features recomputed
        under the current policy, not the features they had when picked.
        """
        features = self._as_features(rows).reshape(-1, self.dim)
        self._num_pending = 0
        self._v = torch.eye(self.dim, dtype=self.dtype, device=self._v.device) * self.reg
        self._v.addmm_(features.T, features)
        self.num_updates = features.shape[0]
        self.refactor()

    def refactor(self) -> None:
        """Recompute V⁻¹ and log det V from the accumulated V (Cholesky), discarding rank-one drift."""
        chol, info = torch.linalg.cholesky_ex(self.v)
        if int(info) != 0:
            raise SelectionError("design matrix V lost positive definiteness (non-finite features?)")
        self._v_inv = torch.cholesky_inverse(chol)
        self._logdet = float(2.0 * torch.log(torch.diagonal(chol)).sum())

    def logdet(self) -> float:
        """log det V, tracked as k·log λ + Σ log(1 + xᵀV⁻¹x) and reset exactly at each refactorisation."""
        return self._logdet

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue selecting after a restart (tensors on CPU)."""
        return {
            "dim": self.dim,
            "reg": self.reg,
            "refactor_every": self.refactor_every,
            "num_updates": self.num_updates,
            "logdet": self._logdet,
            "v": self.v.cpu(),
            "v_inv": self.v_inv.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output; a different dimension raises :class:`SelectionError`."""
        missing = {"dim", "reg", "num_updates", "logdet", "v", "v_inv"} - set(state)
        if missing:
            raise SelectionError(f"design state: missing keys {sorted(missing)}")
        if int(state["dim"]) != self.dim or tuple(state["v_inv"].shape) != (self.dim, self.dim):
            raise SelectionError(
                f"design state has dimension {state['dim']} but this selector uses {self.dim} "
                "(features.projection_dim changed?)"
            )
        device = self._v_inv.device
        self.reg = float(state["reg"])
        self.refactor_every = int(state.get("refactor_every", self.refactor_every))
        self.num_updates = int(state["num_updates"])
        self._logdet = float(state["logdet"])
        self._v = state["v"].to(dtype=self.dtype, device=device).clone()
        self._v_inv = state["v_inv"].to(dtype=self.dtype, device=device).clone()
        self._num_pending = 0
