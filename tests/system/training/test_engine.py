"""Engines and the runner's loss reduction: 2 DDP ranks on gloo take the gradient of the global mean."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from system.config import TrainConfig
from system.training.engine import TorchEngine, deepspeed_config
from system.training.runner import MetricTally, accumulate_window, rank_share
from tests.conftest import REPO_ROOT
from tests.system.training.conftest import free_port

# One accumulation window of two global batches: 5 pairs split 3/2 over two ranks, then 1 pair that
# rank 1 cannot share (it runs a zero-weight row). A per-rank mean of means would weigh them wrongly.
WINDOW = [[4, 0, 5, 2, 1], [3]]
FEATURES, TARGETS = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64), \
    torch.arange(6, dtype=torch.float64)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()


def _squared_errors(model: torch.nn.Module):
    def losses(indices):
        rows = torch.tensor(list(indices))
        per_example = (model(FEATURES[rows]).squeeze(-1) - TARGETS[rows]) ** 2
        return per_example, {"loss": per_example.mean().item()}

    return losses


def _rank_gradients(rank: int, world: int, port: int, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                         timeout=timedelta(seconds=120))
    try:
        model = _model()
        engine = TorchEngine(model, lr=0.1, weight_decay=0.0, max_grad_norm=1.0, distributed=True)
        accumulate_window(engine, _squared_errors(engine.forward), WINDOW, rank, world, MetricTally())
        torch.save([param.grad for param in model.parameters()], f"{out}/rank{rank}.pt")
        # Rank 0 hosts the rendezvous store: neither rank tears down while the other may still need it.
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def test_two_ddp_ranks_take_the_gradient_of_the_global_mean(tmp_path: Path) -> None:
    ranks = mp.start_processes(_rank_gradients, args=(2, free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 300
    while not ranks.join(timeout=5):
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the two gloo ranks did not finish within 300 s")
    distributed = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]

    model = _model()  # one process, the whole window: ∇ (1/6)·Σ_i ℓ_i
    everything = [i for batch in WINDOW for i in batch]
    _squared_errors(model)(everything)[0].mean().backward()
    expected = [param.grad for param in model.parameters()]
    for grads in distributed:
        assert all(torch.allclose(got, want, rtol=1e-12, atol=1e-15) for got, want in zip(grads, expected, strict=True))

    # the test can tell: the mean over the two batches of each rank's mean is another gradient
    model = _model()
    losses = _squared_errors(model)
    mean_of_means = sum(losses(rank_share(batch, rank, 2)[0])[0].mean() for batch in WINDOW for rank in range(2)) / 4
    mean_of_means.backward()
    assert not torch.allclose(next(model.parameters()).grad, expected[0])


def test_rank_shares_cover_each_batch_once() -> None:
    batch = [5, 1, 9, 4, 7]
    (first, n_first), (second, n_second) = rank_share(batch, 0, 2), rank_share(batch, 1, 2)
    assert sorted(first + second) == sorted(batch) and (n_first, n_second) == (3, 2)
    assert rank_share([3], 1, 2) == ([3], 0)  # a row to run, weighing nothing


def test_deepspeed_config_follows_train_section() -> None:
    train = TrainConfig(batch_size=7, grad_accum_steps=2, deepspeed={"stage": 3, "offload_optimizer": True})
    ds = deepspeed_config(train, world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["train_batch_size"] == 16
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"}}
    assert ds["gradient_clipping"] == train.max_grad_norm and ds["zero_allow_untested_optimizer"]
    assert ds["managed_gradient_accumulation"] is False  # the runner's step() is the boundary


NO_GROUP = """
import torch
from system.config import TrainConfig
from system.errors import ConfigError
from system.training.engine import DeepSpeedEngine
assert not torch.distributed.is_initialized()
try:
    DeepSpeedEngine(torch.nn.Linear(2, 2), TrainConfig())
except ConfigError as exc:
    print(exc)
"""


def test_deepspeed_without_a_process_group_names_the_setting() -> None:
    """In a fresh process: this session keeps a one-process group for the DeepSpeed tests once one has run."""
    done = subprocess.run([sys.executable, "-c", NO_GROUP], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "train.deepspeed.enabled" in done.stdout, done.stdout + done.stderr[-2000:]
