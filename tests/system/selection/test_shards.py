"""Sharded selection over W shards returns exactly the single-process picks, for every built-in strategy."""

from __future__ import annotations

import pytest
import torch

from system.errors import SelectionError
from system.selection import (
    DesignState,
    Proposal,
    Shard,
    get_strategy,
    merge_argmax,
    merge_ranked,
    shard_argmax,
    strategy_names,
)
from system.selection.shards import Ranked, RowScorer, selection_device
from tests.system.selection.picks import local_picks


class ShardsPool:
    """A ShardedPool of W contiguous :class:`Shard` objects in one process (what the selector does over Ray)."""

    def __init__(self, rows: torch.Tensor, num_shards: int, device: str | None = None) -> None:
        self.rows = rows
        chunks = list(torch.tensor_split(rows, num_shards))
        offsets = [sum(chunk.shape[0] for chunk in chunks[:rank]) for rank in range(num_shards)]
        self.shards = [Shard(chunk, offset, device) for chunk, offset in zip(chunks, offsets, strict=True)]

    def blocked(self) -> torch.Tensor:
        return self.rows.abs().amax(dim=1) == 0

    def row(self, index: int) -> torch.Tensor:
        return self.rows[index]

    def begin(self, v_inv: torch.Tensor) -> list[Proposal | None]:
        return [shard.begin(v_inv) for shard in self.shards]

    def update(self, z: torch.Tensor, c: float, taken: int) -> list[Proposal | None]:
        return [shard.update(z, c, taken) for shard in self.shards]

    def top(self, scorer: RowScorer, budget: int) -> list[Ranked]:
        return merge_ranked([shard.top(scorer, budget) for shard in self.shards], budget)


@pytest.mark.parametrize("num_workers", [2, 3, 7])
def test_sharded_pick_order_equals_single_process(num_workers: int) -> None:
    phi = torch.randn(300, 24, generator=torch.Generator().manual_seed(num_workers), dtype=torch.float64)
    phi[[5, 150]] = 0.0  # zero rows are never picked
    for name in strategy_names():
        single = local_picks(phi, 40, 1.0, name, weights=torch.full((300,), 0.25, dtype=torch.float64), seed=7)
        rule = get_strategy(name)
        rows = rule.design_rows(phi, torch.full((300,), 0.25, dtype=torch.float64))
        sharded = rule.pick(ShardsPool(rows, num_workers), 40, DesignState(24, 1.0), seed=7)
        assert sharded.indices == single, name
        assert len(set(single)) == 40 and not {5, 150} & set(single)


DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.mark.parametrize("device", DEVICES)
def test_shards_on_a_device_score_there_and_pick_as_on_the_cpu(device: str) -> None:
    phi = torch.randn(2000, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    phi[7] = 0.0
    expected = local_picks(phi, 60, 0.5, "adpo")
    pool = ShardsPool(phi, 3, device)
    picks = get_strategy("adpo").pick(pool, 60, DesignState(64, 0.5, device=device), seed=0)
    assert picks.indices == expected and 7 not in picks.indices
    for shard in pool.shards:  # Φ, scores and the taken mask stay on the device; proposals come back on the CPU
        assert {shard.rows.device.type, shard.scores.device.type, shard.taken.device.type} == {device}
        proposal = shard.proposal()
        assert proposal is not None and proposal[2].device.type == "cpu"
    assert picks.scores[0] == pytest.approx(float(phi[expected[0]].square().sum()) / 0.5, rel=1e-12)  # ‖φ‖²/λ


def test_selection_device_follows_the_setting() -> None:
    has_cuda = torch.cuda.is_available()
    assert selection_device("cpu") == torch.device("cpu")
    assert selection_device("auto").type == ("cuda" if has_cuda else "cpu")
    if has_cuda:
        assert selection_device("cuda").type == "cuda"
    else:
        with pytest.raises(SelectionError, match=r"selection\.device is 'cuda' but this process sees no CUDA"):
            selection_device("cuda")


def test_cached_greedy_equals_naive_reinversion() -> None:
    phi = torch.randn(120, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    picks = local_picks(phi, 15, 0.5, "adpo")
    v = 0.5 * torch.eye(10, dtype=torch.float64)
    naive: list[int] = []
    for _ in range(15):
        scores = ((phi @ torch.linalg.inv(v)) * phi).sum(-1)
        scores[naive] = -1.0
        best = int(torch.argmax(scores))
        naive.append(best)
        v = v + torch.outer(phi[best], phi[best])
    assert picks == naive


def test_merge_argmax_takes_the_largest_score_and_the_smallest_index_on_ties() -> None:
    row = torch.zeros(2)
    proposals = [(40, 1.0, row), None, (5, 1.0, row), (3, 0.5, row), (12, 1.0, row)]
    assert merge_argmax(proposals)[:2] == (5, 1.0)  # type: ignore[index]
    assert merge_argmax([None, None]) is None


def test_shard_argmax_skips_taken_and_prefers_first_of_ties() -> None:
    scores = torch.tensor([3.0, 1.0, 3.0, 3.0], dtype=torch.float64)
    assert shard_argmax(scores, torch.tensor([True, False, False, False])) == (2, 3.0)
    assert shard_argmax(scores, torch.ones(4, dtype=torch.bool)) is None


def test_empty_shards_propose_nothing_and_change_nothing() -> None:
    phi = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pool = ShardsPool(phi, 6)  # two shards hold no rows
    assert [shard.rows.shape[0] for shard in pool.shards] == [1, 1, 1, 1, 0, 0]
    pool.shards.append(Shard(torch.zeros(0, 0), 4))  # a worker that had nothing to featurise
    picks = get_strategy("adpo").pick(pool, 4, DesignState(3), seed=0)
    assert picks.indices == local_picks(phi, 4, 1.0, "adpo")
