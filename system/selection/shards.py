"""A candidate pool split over W shards, and the pure functions of cached-score greedy on it.

A shard holds rows X_w [N_w, k] (contiguous global indices) and its cached scores s_i = x_iᵀV⁻¹x_i;
the selector alone holds V⁻¹. One greedy pick (science.md, "Distributed greedy selection"):

1. every shard proposes :func:`shard_argmax` of its untaken rows; the selector keeps
   :func:`merge_argmax` of the proposals (largest score, ties → smallest global index);
2. the selector folds the winner into V⁻¹ (``DesignState.update``) and broadcasts (z, c);
3. every shard calls :func:`update_shard_scores`: s_i ← s_i − (x_iᵀz)²/c, one mat-vec.

By Sherman–Morrison, xᵀ(V⁻¹ − zzᵀ/c)x = xᵀV⁻¹x − (xᵀz)²/c, so the cached scores stay exact.
:class:`ShardedPool` is what a strategy's pick step sees; :class:`LocalPool` is the one-shard pool of a
single process and the selector actor implements it over Ray feature workers, so the single-process
greedy is the same procedure with W = 1 and both return the same pick order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from system.errors import SelectionError

T = TypeVar("T")

Proposal = tuple[int, float, Tensor]
"""A shard's best untaken row: (global index, score x_iᵀV⁻¹x_i, row x_i [k])."""


class ShardedPool(Protocol):
    """N design rows x_i [k] split over shards; indices are global (shard offset + local index)."""

    def blocked(self) -> Tensor:
        """[N] bool: rows that may not be picked (zero features: they carry no information)."""
        ...

    def row(self, index: int) -> Tensor:
        """Row x_index [k]."""
        ...

    def begin(self, v_inv: Tensor) -> list[Proposal | None]:
        """Every shard scores its rows under V⁻¹ [k, k], blocks its zero rows, and proposes its best row."""
        ...

    def update(self, z: Tensor, c: float, taken: int) -> list[Proposal | None]:
        """Every shard applies s_i ← s_i − (x_iᵀz)²/c, marks ``taken`` if it holds it, and proposes again."""
        ...


def shard_evenly(items: Sequence[T], num_shards: int) -> list[list[T]]:
    """Contiguous shards whose sizes differ by at most one; concatenated they give ``items`` back."""
    base, extra = divmod(len(items), num_shards)
    shards, start = [], 0
    for rank in range(num_shards):
        stop = start + base + (1 if rank < extra else 0)
        shards.append(list(items[start:stop]))
        start = stop
    return shards


def score_shard(phi_shard: Tensor, v_inv: Tensor) -> Tensor:
    """s_i = φ_iᵀ V⁻¹ φ_i for every row of ``phi_shard`` [N_w, k] → [N_w] (in V⁻¹'s dtype, ≥ 0)."""
    features = phi_shard.to(v_inv.dtype)
    return ((features @ v_inv) * features).sum(dim=-1).clamp_min(0.0)


def update_shard_scores(scores: Tensor, phi_shard: Tensor, z: Tensor, c: float) -> Tensor:
    """Cached scores after V⁻¹ ← V⁻¹ − zzᵀ/c: s_i − (φ_iᵀz)²/c, one mat-vec [N_w, k]·[k] (new tensor)."""
    projections = phi_shard.to(z.dtype) @ z
    return (scores - projections.square() / c).clamp_min(0.0)


def shard_argmax(scores: Tensor, taken: Tensor) -> tuple[int, float] | None:
    """(local index, score) of the largest score among rows with ``taken`` False; first index on ties
    (``torch.argmax`` returns the first maximal index)."""
    if scores.numel() == 0 or bool(taken.all()):
        return None
    masked = scores.masked_fill(taken, float("-inf"))
    index = int(torch.argmax(masked))
    return index, float(masked[index])


def merge_argmax(proposals: Sequence[Proposal | None]) -> Proposal | None:
    """The winning proposal: largest score, ties broken by smallest global index; None when all are None."""
    live = [proposal for proposal in proposals if proposal is not None]
    return min(live, key=lambda proposal: (-proposal[1], proposal[0])) if live else None


def selection_device(setting: str) -> torch.device:
    """Where this process keeps Φ, cached scores and V (``selection.device``): ``auto`` → its first CUDA device
    when it has one, else the CPU; ``cpu``; ``cuda`` (refused with a clear error when there is none).

    Raises:
        SelectionError: ``cuda`` asked in a process that sees no CUDA device.
    """
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SelectionError("selection.device is 'cuda' but this process sees no CUDA device "
                                 "(give the feature workers and the selector a GPU, or use 'auto')")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def blocked_rows(rows: Tensor) -> Tensor:
    """[N] bool: all-zero rows of ``rows`` [N, k] (max-norm 0: one pass, no [N, k] temporary)."""
    if not rows.shape[1]:
        return torch.ones(rows.shape[0], dtype=torch.bool)
    return torch.linalg.vector_norm(rows, ord=math.inf, dim=1) == 0


class Shard:
    """One shard's rows [N_w, k] at global ``offset``, its cached scores and taken mask, all on ``device``.

    Selection runs where Φ lives: with ``device`` a GPU, the rows are copied there once, the O(N_w·k²) scoring and
    every O(N_w·k) update run there, and only V⁻¹ (once), z (k floats per pick) and the proposal (an index, a
    score and one row, returned on the CPU) cross the bus. ``device`` None keeps the rows where they are.
    """

    def __init__(self, rows: Tensor, offset: int = 0, device: torch.device | str | None = None) -> None:
        self.rows = rows if device is None else rows.to(device)
        self.offset = offset
        self.scores = torch.zeros(0, device=self.rows.device)
        self.taken = torch.zeros(0, dtype=torch.bool, device=self.rows.device)

    def begin(self, v_inv: Tensor, blocked: Tensor | None = None) -> Proposal | None:
        """Score every row under V⁻¹; block zero rows (and ``blocked``); propose the best row (None if empty)."""
        device = self.rows.device
        self.taken = blocked_rows(self.rows) if blocked is None else blocked.to(device, copy=True)
        if self.rows.shape[0]:
            self.scores = score_shard(self.rows, v_inv.to(device))
        return self.proposal()

    def update(self, z: Tensor, c: float, taken: int | None) -> Proposal | None:
        """Sherman–Morrison score update; ``taken`` is a global index (ignored when another shard holds it)."""
        if taken is not None and 0 <= taken - self.offset < self.rows.shape[0]:
            self.taken[taken - self.offset] = True
        if self.rows.shape[0]:
            self.scores = update_shard_scores(self.scores, self.rows, z.to(self.rows.device), c)
        return self.proposal()

    def proposal(self) -> Proposal | None:
        best = shard_argmax(self.scores, self.taken) if self.rows.shape[0] else None
        if best is None:
            return None
        index, score = best
        return self.offset + index, score, self.rows[index].cpu()


class LocalPool:
    """The :class:`ShardedPool` of one process: all rows [N, k] in one shard (on ``device``, see :class:`Shard`);
    ``blocked`` [N] bool."""

    def __init__(self, rows: Tensor, blocked: Tensor, device: torch.device | str | None = None) -> None:
        self.shard = Shard(rows, device=device)
        self._blocked = blocked

    def blocked(self) -> Tensor:
        return self._blocked

    def row(self, index: int) -> Tensor:
        return self.shard.rows[index].cpu()

    def begin(self, v_inv: Tensor) -> list[Proposal | None]:
        return [self.shard.begin(v_inv, self._blocked)]

    def update(self, z: Tensor, c: float, taken: int) -> list[Proposal | None]:
        return [self.shard.update(z, c, taken)]
