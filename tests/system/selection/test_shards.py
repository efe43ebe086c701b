"""Sharded greedy over W workers (pure shard functions) returns exactly the single-process pick order."""

from __future__ import annotations

import pytest
import torch

from system.selection import DesignState, merge_argmax, score_shard, select_batch, shard_argmax, update_shard_scores


def sharded_greedy(phi: torch.Tensor, budget: int, num_workers: int, reg: float) -> list[int]:
    """A selector holding V⁻¹ and W workers holding contiguous shards, talking only through the pure functions."""
    shards = list(torch.tensor_split(phi, num_workers))
    offsets = [0]
    for shard in shards[:-1]:
        offsets.append(offsets[-1] + shard.shape[0])
    selector = DesignState(phi.shape[1], reg)
    scores = [score_shard(shard, selector.v_inv) for shard in shards]
    taken = [torch.zeros(shard.shape[0], dtype=torch.bool) for shard in shards]
    picks = []
    for _ in range(budget):
        proposals = []
        for worker, (shard_scores, shard_taken) in enumerate(zip(scores, taken, strict=True)):
            best = shard_argmax(shard_scores, shard_taken)
            if best is not None:
                proposals.append((worker, best[0], best[1]))
        worker, index, _ = merge_argmax(proposals)
        taken[worker][index] = True
        picks.append(offsets[worker] + index)
        z, c = selector.update(shards[worker][index])
        scores = [update_shard_scores(s, shard, z, c) for s, shard in zip(scores, shards, strict=True)]
    return picks


@pytest.mark.parametrize("num_workers", [2, 3, 7])
def test_sharded_pick_order_equals_single_process(num_workers: int) -> None:
    phi = torch.randn(300, 24, generator=torch.Generator().manual_seed(num_workers), dtype=torch.float64)
    single = select_batch(phi, 40, DesignState(24, 1.0), "adpo")
    assert sharded_greedy(phi, 40, num_workers, 1.0) == single
    assert len(set(single)) == 40


def test_cached_greedy_equals_naive_reinversion() -> None:
    phi = torch.randn(120, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    picks = select_batch(phi, 15, DesignState(10, 0.5), "adpo")
    v = 0.5 * torch.eye(10, dtype=torch.float64)
    naive: list[int] = []
    for _ in range(15):
        scores = ((phi @ torch.linalg.inv(v)) * phi).sum(-1)
        scores[naive] = -1.0
        best = int(torch.argmax(scores))
        naive.append(best)
        v = v + torch.outer(phi[best], phi[best])
    assert picks == naive


def test_merge_argmax_tie_break_is_deterministic() -> None:
    assert merge_argmax([(2, 0, 1.0), (0, 5, 1.0), (0, 3, 1.0), (1, 0, 0.5)]) == (0, 3, 1.0)
    with pytest.raises(ValueError):
        merge_argmax([])


def test_shard_argmax_skips_taken_and_prefers_first_of_ties() -> None:
    scores = torch.tensor([3.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    assert shard_argmax(scores, torch.tensor([True, False, False, False])) == (2, 3.0)
    assert shard_argmax(scores, torch.ones(4, dtype=torch.bool)) is None
