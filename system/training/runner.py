"""The one epoch runner every trainer uses: single process, DDP or DeepSpeed, SFT warm-up or preferences.

An epoch is a list of *global* batches (index lists, the same on every rank); ``grad_accum_steps``
consecutive batches form an accumulation window and one optimizer step; the last window of an
epoch may be shorter and is stepped like the others. Within a window of N examples in total, rank r
takes its slice ``batch[r::W]`` of every batch, computes the per-example losses ℓ_i and back-propagates
Σ_{i ∈ slice} ℓ_i / N; the engine sums gradients across ranks (see :mod:`system.training.engine`),
so each step descends the global mean (1/N)·Σ_i ℓ_i whether the examples split evenly or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from system.training.engine import TrainEngine

MicroBatchLoss = Callable[[Sequence[int]], tuple[Tensor, dict[str, float]]]
"""Per-example losses ``[b]`` of the examples at the given indices, and their mean metrics."""

EpochBatches = Callable[[int], list[list[int]]]
"""The global batches (example indices) of an epoch, the same on every rank."""


def rank_share(indices: Sequence[int], rank: int, world_size: int) -> tuple[list[int], int]:
    """This rank's rows ``indices[rank::world]`` of a global batch and how many of them count.

    A rank left without rows (a batch smaller than the world) gets one row of the batch with weight 0,
    so it still runs forward and backward and takes part in every collective; it adds nothing.
    """
    own = list(indices[rank::world_size])
    return (own, len(own)) if own else ([indices[rank % len(indices)]], 0)


@dataclass
class MetricTally:
    """One rank's running sums of example-weighted metrics: Σ_batches metric·count and Σ count."""

    sums: dict[str, float] = field(default_factory=dict)
    count: float = 0.0

    def add(self, metrics: dict[str, float], count: int) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * count
        self.count += count

    def global_means(self, world_size: int, device: torch.device) -> dict[str, float]:
        """Example-weighted means over all ranks (a collective when ``world_size`` > 1)."""
        keys = sorted(self.sums)
        totals = torch.tensor([self.sums[key] for key in keys] + [self.count], dtype=torch.float64, device=device)
        if world_size > 1:
            torch.distributed.all_reduce(totals)
        return {key: float(totals[i] / totals[-1]) for i, key in enumerate(keys)}


@dataclass
class TrainProgress:
    """Where a run stands at an optimizer-step boundary (the same on every rank).

    Attributes:
        epoch: the epoch in progress (0-based); equals the epochs completed when ``batch`` is 0.
        batch: global batches of ``epoch`` already stepped on (a window boundary).
        optimizer_steps: optimizer updates so far.
        epoch_metrics: the global mean metrics of each completed epoch (``epoch`` from 1, ``loss``, …).
    """

    epoch: int = 0
    batch: int = 0
    optimizer_steps: int = 0
    epoch_metrics: list[dict[str, float]] = field(default_factory=list)


def accumulate_window(
    engine: TrainEngine,
    loss_fn: MicroBatchLoss,
    window: Sequence[Sequence[int]],
    rank: int,
    world_size: int,
    tally: MetricTally,
) -> None:
    """Back-propagate this rank's share of one accumulation window: Σ_{i ∈ share} ℓ_i / N, N = |window|."""
    total = sum(len(batch) for batch in window)
    for batch in window:
        own, counted = rank_share(batch, rank, world_size)
        losses, metrics = loss_fn(own)
        weights = torch.zeros(len(own), dtype=losses.dtype, device=losses.device)
        weights[:counted] = 1.0 / total
        engine.backward((losses * weights).sum())
        tally.add(metrics, counted)


def run_epochs(
    engine: TrainEngine,
    loss_fn: MicroBatchLoss,
    epoch_batches: EpochBatches,
    epochs: int,
    grad_accum_steps: int,
    progress: TrainProgress,
    tally: MetricTally,
    *,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device | None = None,
    checkpoint: Callable[[], None] | None = None,
    checkpoint_every_steps: int = 0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainProgress:
    """Train from ``progress`` to the end of epoch ``epochs``; ``progress`` and ``tally`` are updated in place.

    ``checkpoint()`` runs after every epoch and, with ``checkpoint_every_steps`` = k > 0, after every
    k-th optimizer step inside an epoch; a run restored from such a checkpoint (progress, tally, engine
    and RNG states) continues exactly as the uninterrupted run. ``on_epoch_end(epoch, metrics)`` runs
    before the epoch's checkpoint and may add entries to ``metrics``.
    """
    device = device or torch.device("cpu")
    for epoch in range(progress.epoch, epochs):
        batches = epoch_batches(epoch)
        for start in range(progress.batch, len(batches), grad_accum_steps):
            window = batches[start : start + grad_accum_steps]
            accumulate_window(engine, loss_fn, window, rank, world_size, tally)
            engine.step()
            progress.batch, progress.optimizer_steps = start + len(window), progress.optimizer_steps + 1
            due = checkpoint_every_steps > 0 and progress.optimizer_steps % checkpoint_every_steps == 0
            if checkpoint and due and progress.batch < len(batches):  # the epoch's end checkpoints below
                checkpoint()
        summary = {"epoch": epoch + 1, **tally.global_means(world_size, device)}
        progress.epoch, progress.batch = epoch + 1, 0
        progress.epoch_metrics.append(summary)
        tally.sums, tally.count = {}, 0.0
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, summary)
        if checkpoint:
            checkpoint()
    return progress
