"""A candidate pool split over W shards, and the pure functions of cached-score greedy on it.

A shard holds rows X_w [N_w, k] (contiguous global indices) and its cached scores s_i = x_iᵀV⁻¹x_i;
the selector alone holds V⁻¹. One greedy pick (docs/method.md, "Distributed greedy selection"):

1. every shard proposes the argmax of its untaken rows (:func:`shard_argmax`); the selector keeps
   :func:`merge_argmax` of the proposals (largest score, ties → smallest global index);
2. the selector folds the winner into V⁻¹ (``DesignState.update``) and broadcasts (z, c);
3. every shard's scores become s_i − (x_iᵀz)²/c (:func:`update_shard_scores`, one mat-vec, done lazily below).

By Sherman–Morrison, xᵀ(V⁻¹ − zzᵀ/c)x = xᵀV⁻¹x − (xᵀz)²/c, so the cached scores stay exact.

A :class:`Shard` applies step 3 lazily (Minoux's lazy greedy): every update only lowers scores, so a cached
score is an upper bound of the current one. To propose, the shard takes its largest bound; if that row is
up to date it is the exact argmax, else the shard brings its top rows up to date (one [B, t]·k product over
the t updates they missed) and looks again. Each pick then costs O(B·t·k) on the few contenders instead of
O(N·k) on every row — the same picks as the eager update (ties included: first index), in far less time when
a batch has many picks (offline: 2^15 picks over 2^17 rows).
:class:`ShardedPool` is what a strategy's pick step sees; :class:`LocalPool` is the one-shard pool of a
single process and the selector actor implements it over Ray feature workers, so the single-process
greedy is the same procedure with W = 1 and both return the same pick order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import torch
from torch import Tensor

from system.errors import SelectionError

T = TypeVar("T")

Proposal = tuple[int, float, Tensor]
"""A shard's best untaken row: (global index, score x_iᵀV⁻¹x_i, row x_i [k])."""

Ranked = tuple[int, tuple[float, ...]]
"""A row ranked by a :class:`RowScorer`: (global index, its keys)."""

RowMap = Callable[[Tensor, Tensor], Tensor]
"""(stored rows [B, k], their local indices [B]) → their design rows x [B, k], row by row."""


class RowScorer(Protocol):
    """Scores that do not change within a batch (e.g. an ensemble's disagreement), computed where the rows are."""

    def keys(self, rows: Tensor) -> Tensor:
        """[N, K] keys of rows [N, k], compared lexicographically (largest first)."""
        ...


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

    def top(self, scorer: RowScorer, budget: int) -> list[Ranked]:
        """The ``budget`` unblocked rows with the largest ``scorer`` keys over every shard (:func:`merge_ranked`);
        ``scorer`` is sent to the shards once."""
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


SCORE_CHUNK_ROWS = 4096
"""Rows scored per GEMM in :func:`score_shard`: the [chunk, k] product stays in cache (3x faster at k = 60)."""


def score_shard(phi_shard: Tensor, v_inv: Tensor) -> Tensor:
    """s_i = φ_iᵀ V⁻¹ φ_i for every row of ``phi_shard`` [N_w, k] → [N_w] (in V⁻¹'s dtype, ≥ 0), in chunks of
    ``SCORE_CHUNK_ROWS`` rows."""
    scores = torch.empty(phi_shard.shape[0], dtype=v_inv.dtype, device=v_inv.device)
    for start in range(0, phi_shard.shape[0], SCORE_CHUNK_ROWS):
        features = phi_shard[start : start + SCORE_CHUNK_ROWS].to(v_inv.dtype)
        scores[start : start + SCORE_CHUNK_ROWS] = ((features @ v_inv) * features).sum(dim=-1)
    return scores.clamp_min(0.0)


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


def rank_rows(keys: Tensor, blocked: Tensor, budget: int) -> Tensor:
    """Indices of the ``budget`` unblocked rows with the largest ``keys`` [N, K] (lexicographic, ties → smaller
    index): the rows whose first key reaches the ``budget``-th largest (ties included), then stable descending
    sorts of those from the last key to the first."""
    primary = keys[:, 0].masked_fill(blocked, float("-inf"))
    take = min(budget, int((~blocked).sum()))
    if take == 0:
        return torch.zeros(0, dtype=torch.long, device=keys.device)
    threshold = torch.topk(primary, take).values[-1]
    order = torch.nonzero((primary >= threshold) & ~blocked).flatten()
    for column in reversed(range(keys.shape[1])):
        order = order[torch.sort(keys[order, column], descending=True, stable=True).indices]
    return order[:take]


def merge_ranked(ranked: Sequence[Sequence[Ranked]], budget: int) -> list[Ranked]:
    """The ``budget`` best of every shard's ranked rows: largest keys first, ties → smallest global index."""
    rows = [row for shard in ranked for row in shard]
    return sorted(rows, key=lambda row: (tuple(-key for key in row[1]), row[0]))[:budget]


def blocked_rows(rows: Tensor) -> Tensor:
    """[N] bool: all-zero rows of ``rows`` [N, k]."""
    if not rows.shape[1]:
        return torch.ones(rows.shape[0], dtype=torch.bool, device=rows.device)
    return ~rows.any(dim=1)


class Shard:
    """One shard's rows [N_w, k] at global ``offset``, its cached scores and taken mask, all on ``device``.

    Selection runs where Φ lives: with ``device`` a GPU, the rows are copied there once, the O(N_w·k²) scoring and
    every update run there, and only V⁻¹ (once), z (k floats per pick) and the proposal (an index, a score and
    one row, returned on the CPU) cross the bus. ``device`` None keeps the rows where they are.

    Updates are lazy (see the module docstring): ``scores`` holds upper bounds, exact for the rows whose
    ``fresh`` count equals the number of updates of the round; taken and blocked rows hold −inf.
    """

    refresh_rows = 64
    """Rows B first brought up to date when the largest bound is stale (see :meth:`proposal`), in one GEMM per chunk
    of rows."""

    def __init__(self, rows: Tensor, offset: int = 0, device: torch.device | str | None = None) -> None:
        self.rows = rows if device is None else rows.to(device)
        self.offset = offset
        self.design: RowMap | None = None
        """Design rows of stored rows (``None``: the stored rows are the design rows): set by a pool that keeps
        φ and re-weights it between batches (:class:`~system.selection.refit.RefitPool`)."""
        self.scores = torch.zeros(0, device=self.rows.device)
        self.taken = torch.zeros(0, dtype=torch.bool, device=self.rows.device)
        self.fresh = torch.zeros(0, dtype=torch.long, device=self.rows.device)
        self._z = torch.zeros(0, 0, device=self.rows.device)  # [capacity, k]: the round's z, first ``updates`` rows
        self._c = torch.zeros(0, device=self.rows.device)
        self._v_inv = torch.zeros(0, 0, device=self.rows.device)  # V⁻¹ of the round (set by ``begin``)
        self._unscored = 0  # rows still holding a bound from ``begin`` (``fresh`` −1)
        self.updates = 0

    def begin(self, v_inv: Tensor, blocked: Tensor | None = None, bounds: Tensor | None = None) -> Proposal | None:
        """Score every row under V⁻¹; block zero rows (and ``blocked``); propose the best row (None if empty).

        With ``bounds`` [N_w] (upper bounds of the rows' scores under V⁻¹) no row is scored up front: every row starts
        stale (``fresh`` −1) and :meth:`proposal` scores only the rows whose bound contends for the argmax.
        """
        device = self.rows.device
        self.taken = blocked_rows(self.rows) if blocked is None else blocked.to(device, copy=True)
        self.updates = 0
        if self.rows.shape[0]:
            self._v_inv = v_inv.to(device)
            if bounds is None:
                self.scores = self._score(slice(None))
                self.fresh = torch.zeros(self.rows.shape[0], dtype=torch.long, device=device)
            else:
                self.scores = bounds.to(device=device, dtype=self._v_inv.dtype, copy=True)
                self.fresh = torch.full((self.rows.shape[0],), -1, dtype=torch.long, device=device)
            self._unscored = 0 if bounds is None else self.rows.shape[0]
            self.scores.masked_fill_(self.taken, float("-inf"))
            self._z = torch.empty(64, self.rows.shape[1], dtype=self.scores.dtype, device=device)
            self._c = torch.empty(64, dtype=self.scores.dtype, device=device)
        return self.proposal()

    def design_rows(self, index: Tensor | slice) -> Tensor:
        """The design rows x [B, k] of local rows ``index`` (the stored rows mapped by :attr:`design`, if set)."""
        if self.design is None:
            return self.rows[index]
        return self.design(self.rows[index], self._indices(index))

    def _indices(self, index: Tensor | slice) -> Tensor:
        """Local rows ``index`` as an index tensor."""
        if isinstance(index, Tensor):
            return index
        return torch.arange(*index.indices(self.rows.shape[0]), device=self.rows.device)

    def _score(self, index: Tensor | slice) -> Tensor:
        """x_iᵀV⁻¹x_i of local rows ``index`` under the V⁻¹ of :meth:`begin`, mapped in chunks of ``SCORE_CHUNK_ROWS``
        rows (the chunks :func:`score_shard` scores, so the floats are those of one full pass)."""
        if self.design is None:
            return score_shard(self.rows[index], self._v_inv)
        return torch.cat([score_shard(self.design_rows(chunk), self._v_inv)
                          for chunk in self._indices(index).split(SCORE_CHUNK_ROWS)])

    def update(self, z: Tensor, c: float, taken: int | None) -> Proposal | None:
        """Record the Sherman–Morrison step (z, c); ``taken`` is a global index (ignored when another shard holds
        it); propose again."""
        if taken is not None and 0 <= taken - self.offset < self.rows.shape[0]:
            self.taken[taken - self.offset] = True
            self.scores[taken - self.offset] = float("-inf")
        if self.rows.shape[0]:
            if self.updates == self._z.shape[0]:  # grow the history geometrically
                self._z = torch.cat([self._z, torch.empty_like(self._z)])
                self._c = torch.cat([self._c, torch.empty_like(self._c)])
            self._z[self.updates], self._c[self.updates] = z.to(self._z.device), c
            self.updates += 1
        return self.proposal()

    def final_v_inv(self) -> Tensor:
        """V⁻¹ after the round's updates [k, k]: V⁻¹ − Σ_t z_t z_tᵀ / c_t over the Sherman–Morrison steps since
        :meth:`begin`."""
        z = self._z[: self.updates]
        return self._v_inv - (z.T / self._c[: self.updates]) @ z

    def _refresh(self, indices: Tensor) -> None:
        """Bring the scores of rows ``indices`` up to date: s_i ← s_i − Σ_t (x_iᵀz_t)²/c_t over the updates t each
        missed (columns before a row's ``fresh`` count are masked out), clamped at 0. Rows still holding a bound
        (``fresh`` −1) are first scored under the V⁻¹ of :meth:`begin`."""
        unscored = indices[self.fresh[indices] < 0]
        if unscored.numel():
            self.scores[unscored] = self._score(unscored)
            self.fresh[unscored] = 0
            self._unscored -= unscored.numel()
        since = int(self.fresh[indices].min())
        z, c = self._z[since : self.updates], self._c[since : self.updates]
        projections = self.design_rows(indices).to(z.dtype) @ z.T  # [B, t]
        missed = torch.arange(since, self.updates, device=z.device) >= self.fresh[indices].unsqueeze(-1)
        decrease = (projections.square() / c).masked_fill_(~missed, 0.0).sum(dim=-1)
        self.scores[indices] = (self.scores[indices] - decrease).clamp_min(0.0)
        self.fresh[indices] = self.updates

    def top(self, scorer: RowScorer, budget: int, blocked: Tensor | None = None) -> list[Ranked]:
        """This shard's ``budget`` best rows by ``scorer`` (zero rows, and ``blocked`` [N_w], never), global indices."""
        if not self.rows.shape[0]:
            return []
        excluded = blocked_rows(self.rows) if blocked is None else blocked.to(self.rows.device)
        keys = scorer.keys(self.design_rows(slice(None)))
        best = rank_rows(keys, excluded, budget)
        return [(self.offset + index, tuple(key)) for index, key in zip(best.tolist(), keys[best].tolist(),
                                                                          strict=True)]

    def proposal(self) -> Proposal | None:
        """The untaken row with the largest exact score (first index on ties), or None.

        While the largest bound is stale, the B largest bounds are brought up to date, B = ``refresh_rows``, then
        every row; while rows still hold a bound from :meth:`begin`, 8·B, 64·B, … rows before every row instead
        (those bounds are loose after a refit, and the rows that contend are still few)."""
        if not self.rows.shape[0] or bool(self.taken.all()):
            return None
        num_rows, count = self.scores.shape[0], self.refresh_rows
        while True:
            index = int(torch.argmax(self.scores))  # the first maximal bound
            if int(self.fresh[index]) == self.updates:  # exact, and ≥ every other row's bound ≥ its exact score
                break
            top = (torch.arange(num_rows, device=self.scores.device) if count >= num_rows
                   else torch.topk(self.scores, count).indices)
            for chunk in top[(self.fresh[top] < self.updates) & ~self.taken[top]].split(SCORE_CHUNK_ROWS):
                self._refresh(chunk)
            count = count * 8 if self._unscored else num_rows
        return self.offset + index, float(self.scores[index]), self.design_rows(slice(index, index + 1))[0].cpu()


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

    def top(self, scorer: RowScorer, budget: int) -> list[Ranked]:
        return self.shard.top(scorer, budget, self._blocked)
