"""Distributed trainer: DeepSpeed ZeRO-2 vs plain DDP step time, peak memory per worker, MPO vs DPO memory.

Three Ray Train runs on the tiny model with 2 workers over gloo (2 epochs each; the second epoch's
mean step time is compared, so start-up and DeepSpeed's op build are excluded). Peak memory is
rank 0's peak RSS (ru_maxrss: model, optimizer, activations and the Ray worker itself).

    .venv/bin/python benchmarks/bench_trainer.py [--pairs 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ray

from actors.trainer import Trainer
from system.config import load_config
from system.models.tiny import build_tiny_model
from system.types import PreferencePair


def run(work: str, name: str, overrides: list[str], pairs: list[PreferencePair]) -> dict[str, float]:
    config = load_config("configs/tiny.yaml", [f"model.path={work}/model", *overrides])
    _, history = Trainer(config).fit(pairs, f"{work}/{name}", resume=False)
    last = history[-1]
    print(f"{name:10s}: loss {history[0]['loss']:.4f} → {last['loss']:.4f}, step {last['step_time_s'] * 1e3:7.1f} ms,"
          f" peak RSS/worker {last['peak_rss_gb']:.2f} GB")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = tempfile.mkdtemp(prefix="bench-trainer-")
    build_tiny_model(f"{work}/model", load_config("configs/tiny.yaml").model.tiny)
    pairs = [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                            f"No. Cat {i} is loud.") for i in range(args.pairs)]
    common = [f"train.num_workers={args.workers}", "train.epochs=2", "train.batch_size=8", "cluster.trainer.num_cpus=1"]
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    ddp = run(work, "ddp-dpo", [*common, "train.deepspeed.enabled=false", "train.loss=dpo"], pairs)
    zero2 = run(work, "zero2-dpo", [*common, "train.deepspeed.stage=2", "train.loss=dpo"], pairs)
    mpo = run(work, "zero2-mpo", [*common, "train.deepspeed.stage=2", "train.loss=mpo"], pairs)
    ray.shutdown()
    print(f"ZeRO-2 / DDP step time: {zero2['step_time_s'] / ddp['step_time_s']:.2f}x")
    print(f"ZeRO-2 / DDP peak memory per worker: {zero2['peak_rss_gb'] / ddp['peak_rss_gb']:.2f}x")
    print(f"MPO / DPO peak memory per worker (ZeRO-2): {mpo['peak_rss_gb'] / zero2['peak_rss_gb']:.2f}x")


if __name__ == "__main__":
    main()
