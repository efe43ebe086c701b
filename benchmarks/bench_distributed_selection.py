"""Distributed greedy (selector actor + W feature workers) vs single-process greedy at N = 20,000, k = 4096.

Prints the wall time of both on the same features, their ratio, and the bytes the selector sends and
receives per pick (z to every worker, one proposal row from every worker): O(W·k), compared with the
O(N·k) of shipping φ. Both give the same picks (asserted).

    .venv/bin/python benchmarks/bench_distributed_selection.py [--num-pairs 20000] [--dim 4096] [--budget 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import ray
import torch

from actors.features import FeatureWorkerGroup
from actors.selector import Selector
from system.config import load_config
from system.selection import LocalPool, select_round
from system.selection.shards import blocked_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-pairs", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--budget", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = tempfile.mkdtemp(prefix="bench-selection-")
    config = load_config("configs/tiny.yaml", [
        f"model.path={work}/model", f"features.num_workers={args.workers}", "cluster.features.num_cpus=1",
        "cluster.selector.num_cpus=1", "selection.refactor_every=1000000",
    ])
    phi = torch.randn(args.num_pairs, args.dim, generator=torch.Generator().manual_seed(0))
    phi /= phi.norm(dim=1, keepdim=True)
    pair_ids = [f"pair-{i}" for i in range(args.num_pairs)]

    started = time.perf_counter()
    single, state = select_round(LocalPool(phi, blocked_rows(phi)), pair_ids, phi[:0], args.budget, "activedpo", 0,
                                 config.selection.reg, config.selection.refactor_every, config.selection.seed)
    single_s = time.perf_counter() - started
    del state

    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    workers = FeatureWorkerGroup(config, f"{work}/state")
    workers.setup()
    workers.set_features(pair_ids, phi)
    selector = Selector(config, f"{work}/selector.pt")
    selector.setup()
    started = time.perf_counter()
    distributed = selector.select(workers, budget=args.budget, strategy="activedpo", round_index=0)
    distributed_s = time.perf_counter() - started
    ray.shutdown()

    assert distributed.pair_ids == single.pair_ids, "distributed picks differ from the single-process greedy"
    per_pick = distributed.extra["bytes_per_pick"]
    print(f"N={args.num_pairs} k={args.dim} budget={args.budget} W={args.workers} (float64 V⁻¹, CPU)")
    print(f"single-process greedy: {single_s:8.2f} s")
    print(f"distributed greedy:    {distributed_s:8.2f} s   (includes scoring under V⁻¹ on the workers)")
    print(f"time ratio distributed/single: {distributed_s / single_s:.2f}x")
    print(f"bytes per pick: {per_pick / 1e3:.1f} kB = {per_pick / (args.workers * args.dim):.1f} bytes × W·k;"
          f" shipping φ would be {phi.nbytes / 1e6:.0f} MB ({phi.nbytes / per_pick:.0f}x more)")


if __name__ == "__main__":
    main()
