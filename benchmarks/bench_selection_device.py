"""Selection where Φ lives: the same greedy round on a GPU vs on the CPU, measured in the same run.

One :func:`~system.selection.select_round` (V = λI, then ``budget`` cached-score greedy picks) over a one-shard
:class:`~system.selection.LocalPool` — what a feature worker and the selector run with ``selection.device``
— with Φ [N, k], its scores and V⁻¹ on ``--device`` and again on the CPU (float64 both). Prints both wall
times, their ratio, the picks' agreement, and the per-pick time against one read of Φ at the device's
measured read bandwidth (the floor: every pick updates every cached score).

    .venv/bin/python benchmarks/bench_selection_device.py                    # CUDA: N=10,000, k=8192, b=50
    .venv/bin/python benchmarks/bench_selection_device.py --device cpu --num-pairs 2000 --dim 256   # CPU plumbing
"""

from __future__ import annotations

import argparse
import time

import torch
from timing import best_of

from system.selection import LocalPool, select_round
from system.selection.shards import blocked_rows


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_round(phi: torch.Tensor, budget: int, device: torch.device) -> tuple[list[str], float, float]:
    """(pair ids picked, seconds for the whole round incl. copying Φ to ``device``, seconds per pick after
    the initial scoring)."""
    ids = [str(i) for i in range(phi.shape[0])]
    no_labels = phi[:0]
    synchronize(device)
    started = time.perf_counter()
    result, _ = select_round(LocalPool(phi, blocked_rows(phi), device), ids, no_labels, budget, "adpo", 0, 1.0,
                             10 * budget, 0, device)
    synchronize(device)
    total = time.perf_counter() - started
    synchronize(device)
    started = time.perf_counter()
    select_round(LocalPool(phi, blocked_rows(phi), device), ids, no_labels, 1, "adpo", 0, 1.0, 10, 0, device)
    synchronize(device)
    scoring = time.perf_counter() - started  # the copy, the O(N·k²) scoring and a single pick
    return list(result.pair_ids), total, max(total - scoring, 0.0) / max(budget - 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--num-pairs", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=8192)
    parser.add_argument("--budget", type=int, default=50)
    args = parser.parse_args()
    device = torch.device(args.device)
    phi = torch.randn(args.num_pairs, args.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    on_device = phi.to(device)
    floor = best_of(3, lambda: float(on_device.sum()))  # one streaming read of Φ (float() waits for the device)
    timed_round(phi[:64], 2, device)  # warm-up: kernels, allocator
    picks, total, per_pick = timed_round(phi, args.budget, device)
    cpu_picks, cpu_total, cpu_per_pick = timed_round(phi, args.budget, torch.device("cpu"))
    agree = sum(a == b for a, b in zip(picks, cpu_picks, strict=True))
    print(f"N={args.num_pairs}, k={args.dim}, b={args.budget}, float64, CPU threads={torch.get_num_threads()}")
    print(f"{device}: round {total:.2f} s, {per_pick * 1e3:.2f} ms/pick ({per_pick / floor:.1f}x one read of Φ, "
          f"{floor * 1e3:.2f} ms)")
    print(f"cpu: round {cpu_total:.2f} s, {cpu_per_pick * 1e3:.2f} ms/pick")
    print(f"ratio cpu/{device.type}: whole round {cpu_total / total:.1f}x, per pick {cpu_per_pick / per_pick:.1f}x; "
          f"picks identical {agree}/{args.budget}")


if __name__ == "__main__":
    main()
