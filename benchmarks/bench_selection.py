"""Greedy selection of b pairs from N: cached-score Sherman–Morrison greedy vs naive re-inversion per pick.

The naive baseline re-inverts V and rescores every candidate at each pick (O(k³ + N·k²)); the cached
greedy (``system.selection.greedy_pick`` over a one-shard ``LocalPool``) scores once and then spends one
mat-vec over Φ plus one V⁻¹ mat-vec per pick (O(N·k + k²)). A few naive picks are timed and extrapolated to b.
The per-pick floor is one read of Φ (N·k float64) at the memory bandwidth measured in the same run.

    .venv/bin/python benchmarks/bench_selection.py                  # N=10,000, b=50, k=1024 and 8192
    .venv/bin/python benchmarks/bench_selection.py --dims 256 --num-pairs 2000 --budget 10   # quick
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import best_of

from system.selection import DesignState, LocalPool, greedy_pick, shard_argmax, update_shard_scores


def read_bandwidth(buffer: torch.Tensor) -> float:
    """Bytes per second of one streaming read of ``buffer`` (a reduction, best of 3)."""
    seconds = best_of(3, lambda: float(buffer.sum()))
    return buffer.numel() * buffer.element_size() / seconds


def naive_picks(phi: torch.Tensor, picks: int, reg: float) -> tuple[list[int], float]:
    """The first ``picks`` greedy picks by inverting V and rescoring all of Φ each time; (picks, seconds per pick)."""
    v = reg * torch.eye(phi.shape[1], dtype=phi.dtype)
    taken: list[int] = []
    started = time.perf_counter()
    for _ in range(picks):
        v_inv = torch.linalg.inv(v)
        scores = ((phi @ v_inv) * phi).sum(-1)
        scores[taken] = -1.0
        best = int(torch.argmax(scores))
        taken.append(best)
        v += torch.outer(phi[best], phi[best])
    return taken, (time.perf_counter() - started) / picks


def cached_pick_seconds(phi: torch.Tensor, state: DesignState, repeats: int) -> float:
    """Best-of-``repeats`` time of one cached pick: score update (Φ mat-vec), argmax, Sherman–Morrison (z, c)."""
    scores = torch.ones(phi.shape[0], dtype=phi.dtype)
    taken = torch.zeros(phi.shape[0], dtype=torch.bool)
    z, c = state.update(phi[0])

    def pick() -> None:
        nonlocal scores, z, c
        scores = update_shard_scores(scores, phi, z, c)
        index, _ = shard_argmax(scores, taken)  # type: ignore[misc]
        z, c = state.update(phi[index])

    return best_of(repeats, pick)


def bench(num_pairs: int, dim: int, budget: int, naive_count: int, reg: float) -> dict[str, float]:
    phi = torch.randn(num_pairs, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64)
    phi /= phi.norm(dim=1, keepdim=True)
    bandwidth = read_bandwidth(phi)
    floor = phi.numel() * phi.element_size() / bandwidth
    state = DesignState(dim, reg, refactor_every=10 * budget)
    started = time.perf_counter()
    cached = greedy_pick(LocalPool(phi, torch.zeros(num_pairs, dtype=torch.bool)), budget, state)
    cached_total = time.perf_counter() - started
    per_pick = cached_pick_seconds(phi, state, repeats=min(budget, 20))
    naive, naive_per_pick = naive_picks(phi, naive_count, reg)
    assert naive == cached.indices[:naive_count], "naive and cached greedy disagree"
    return {
        "k": dim, "bandwidth_gbs": bandwidth / 1e9, "floor_ms": floor * 1e3, "cached_pick_ms": per_pick * 1e3,
        "naive_pick_s": naive_per_pick, "cached_total_s": cached_total, "naive_total_s": naive_per_pick * budget,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-pairs", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--naive-picks", type=int, default=2, help="naive picks timed (then extrapolated to budget)")
    parser.add_argument("--reg", type=float, default=1.0)
    args = parser.parse_args()
    print(f"N={args.num_pairs}, b={args.budget}, float64, torch threads={torch.get_num_threads()}")
    for dim in args.dims:
        row = bench(args.num_pairs, dim, args.budget, args.naive_picks, args.reg)
        print(
            f"k={dim}: read bandwidth {row['bandwidth_gbs']:.1f} GB/s → floor (one read of Φ) "
            f"{row['floor_ms']:.1f} ms/pick\n"
            f"  cached greedy: {row['cached_pick_ms']:.1f} ms/pick (best of 20; "
            f"{row['cached_pick_ms'] / row['floor_ms']:.2f}x "
            f"the floor); all {args.budget} picks incl. the initial O(N·k²) scoring {row['cached_total_s']:.2f} s\n"
            f"  naive re-inversion: {row['naive_pick_s']:.2f} s/pick (timed {args.naive_picks}, extrapolated "
            f"{row['naive_total_s']:.0f} s for {args.budget})\n"
            f"  speed-up per pick {row['naive_pick_s'] * 1e3 / row['cached_pick_ms']:.0f}x, "
            f"whole batch incl. initial scoring {row['naive_total_s'] / row['cached_total_s']:.0f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
