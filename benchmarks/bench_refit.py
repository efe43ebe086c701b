"""Offline ADPO+ batches after a refit: rescoring every row (a fresh one-shard pool per batch) vs carried bounds.

Both paths refit θ̂ and rebuild V identically before each batch; what is timed is the batch's picks. The baseline is
``pick_validated`` (what offline selection ran per batch before :class:`~system.selection.refit.RefitPool`): the
N design rows √w·φ and their scores under the new V⁻¹, O(N·k²). The carried path (``RefitPool``) starts every
row from its bound of the last batch, rescaled by ρ = λ_max of the generalised eigenproblem of the two V⁻¹ and
by the new weights, and scores exactly only the contenders. The picks must be the same; the speed-up is printed.

    .venv/bin/python benchmarks/bench_refit.py                    # N = 2^17, k = 60, 256 refits of 8 after 4,096
    .venv/bin/python benchmarks/bench_refit.py --num-pairs 8192 --refits 32 --labelled 512   # quick
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from system.losses import logistic_curvature
from system.selection import DesignState, PoolInputs, Strategy, get_strategy, pick_validated
from system.selection.logistic_fit import fit_linear_dpo
from system.selection.refit import RefitPool

Picker = Callable[[Strategy, torch.Tensor, torch.Tensor, DesignState, int], list[int]]


def bradley_terry_pool(num_pairs: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm φ [N, k] and Bradley–Terry labels under a random θ* with ‖θ*‖ = 4."""
    generator = torch.Generator().manual_seed(seed)
    phi = torch.randn(num_pairs, dim, generator=generator, dtype=torch.float64)
    phi /= phi.norm(dim=1, keepdim=True)
    truth = torch.randn(dim, generator=generator, dtype=torch.float64)
    truth *= 4.0 / truth.norm()
    return phi, torch.rand(num_pairs, generator=generator, dtype=torch.float64) < torch.sigmoid(phi @ truth)


def eager_picker(phi: torch.Tensor) -> Picker:
    """A batch by ``pick_validated``: every row rescored under the new V⁻¹."""

    def pick(rule: Strategy, weights: torch.Tensor, taken: torch.Tensor, state: DesignState, take: int) -> list[int]:
        return pick_validated(PoolInputs(phi, weights), take, state, rule, exclude=taken)[0].indices

    return pick


def carried_picker(phi: torch.Tensor, scored: list[int]) -> Picker:
    """A batch from one :class:`RefitPool` kept across batches (bounds carried from the last batch); appends to
    ``scored`` the number of rows the batch scored exactly."""
    pool = RefitPool(phi)

    def pick(rule: Strategy, weights: torch.Tensor, taken: torch.Tensor, state: DesignState, take: int) -> list[int]:
        pool.next_batch(rule, weights, taken)
        picks = rule.pick(pool, take, state, 0).indices
        scored.append(int((pool.shard.fresh >= 0).sum()))
        return picks

    return pick


def run(phi: torch.Tensor, prefer_first: torch.Tensor, labelled: int, refits: int, batch: int,
        picker: Picker) -> tuple[list[int], float]:
    """``labelled`` uniform picks, then ``refits`` batches of ``batch`` ADPO+ picks: (picks, seconds in the picks)."""
    rule = get_strategy("adpo_plus")
    order = torch.randperm(phi.shape[0], generator=torch.Generator().manual_seed(0))[:labelled].tolist()
    taken = torch.zeros(phi.shape[0], dtype=torch.bool)
    taken[order] = True
    theta = torch.zeros(phi.shape[1], dtype=torch.float64)
    state = DesignState(phi.shape[1])
    seconds = 0.0
    for _ in range(refits):
        theta = fit_linear_dpo(phi[order], prefer_first[order], 1.0, init=theta)
        weights = logistic_curvature(phi @ theta)
        state.rebuild(rule.design_rows(phi[order], weights[order]))
        started = time.process_time()
        picks = picker(rule, weights, taken, state, batch)
        seconds += time.process_time() - started
        order += picks
        taken[picks] = True
    return order[labelled:], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-pairs", type=int, default=2**17)
    parser.add_argument("--dim", type=int, default=60)
    parser.add_argument("--labelled", type=int, default=4096, help="uniform picks before the first refit")
    parser.add_argument("--refits", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="picks between refits")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    phi, prefer_first = bradley_terry_pool(args.num_pairs, args.dim, seed=0)
    print(f"N={args.num_pairs}, k={args.dim}, {args.refits} refits of {args.batch} picks after {args.labelled} "
          f"labels, float64, torch threads={torch.get_num_threads()}")
    eager, eager_seconds = run(phi, prefer_first, args.labelled, args.refits, args.batch, eager_picker(phi))
    scored: list[int] = []
    carried, carried_seconds = run(phi, prefer_first, args.labelled, args.refits, args.batch,
                                   carried_picker(phi, scored))
    assert carried == eager, "carried bounds and full rescoring disagree"
    later = scored[len(scored) // 2 :]
    eager_ms, carried_ms = (seconds / args.refits * 1e3 for seconds in (eager_seconds, carried_seconds))
    print(f"  full rescoring: {eager_ms:.1f} CPU ms per batch ({args.num_pairs} rows scored)\n"
          f"  carried bounds: {carried_ms:.1f} CPU ms per batch ({sum(scored) / len(scored):.0f} rows scored on "
          f"average, {sum(later) / len(later):.0f} over the last half of the refits)\n"
          f"  speed-up {eager_seconds / carried_seconds:.1f}x, the same {len(carried)} picks", flush=True)

if __name__ == "__main__":
    main()
