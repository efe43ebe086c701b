"""Distributed trainer: DeepSpeed ZeRO-2 vs plain DDP step time, peak memory per worker, MPO vs DPO memory.

Three Ray Train runs on the tiny model with 2 workers over gloo (2 epochs each; the second epoch's
mean step time is compared, so start-up and DeepSpeed's op build are excluded). Peak memory is
rank 0's peak RSS (ru_maxrss: model, optimizer, activations and the Ray worker itself).
With ``--gpu``: one worker per GPU over NCCL, ZeRO-2 and ZeRO-3 in bf16 against DDP in fp32, a wider
tiny model, and peak GPU memory (``torch.cuda.max_memory_allocated``) instead of RSS.

    .venv/bin/python benchmarks/bench_trainer.py [--pairs 32] [--workers 2] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile

import ray
import torch

from actors.trainer import Trainer
from system.config import load_config
from system.models.tiny import build_tiny_model
from system.types import PreferencePair

# A ~100M-parameter Llama (8 layers × 1024 hidden) so that a GPU step measures more than launch overhead.
GPU_MODEL = ["model.tiny.hidden_size=1024", "model.tiny.intermediate_size=2816", "model.tiny.num_hidden_layers=8",
             "model.tiny.num_attention_heads=16", "model.tiny.num_key_value_heads=16"]


def run(work: str, name: str, overrides: list[str], pairs: list[PreferencePair], memory: str) -> dict[str, float]:
    config = load_config("configs/tiny.yaml", [f"model.path={work}/model", *overrides])
    _, history = Trainer(config).fit(pairs, f"{work}/{name}", resume=False)
    last = history[-1]
    print(f"{name:10s}: loss {history[0]['loss']:.4f} → {last['loss']:.4f}, step {last['step_time_s'] * 1e3:7.1f} ms,"
          f" {memory}/worker {last[memory]:.2f} GB")
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true", help="NCCL, one worker per GPU, bf16 ZeRO-2/3 vs fp32 DDP")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = tempfile.mkdtemp(prefix="bench-trainer-")
    model = GPU_MODEL if args.gpu else []
    build_tiny_model(f"{work}/model", load_config("configs/tiny.yaml", model).model.tiny)
    pairs = [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                            f"No. Cat {i} is loud.") for i in range(args.pairs)]
    workers = min(args.workers, torch.cuda.device_count()) if args.gpu else args.workers
    common = [*model, f"train.num_workers={workers}", "train.epochs=2", "train.batch_size=8",
              "cluster.trainer.num_cpus=1"]
    if args.gpu:
        common += ["train.use_gpu=true", "cluster.trainer.num_gpus=1", "train.deepspeed.precision=bf16"]
    memory = "peak_gpu_gb" if args.gpu else "peak_rss_gb"
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False)
    ddp = run(work, "ddp-dpo", [*common, "train.deepspeed.enabled=false", "train.loss=dpo"], pairs, memory)
    zero2 = run(work, "zero2-dpo", [*common, "train.deepspeed.stage=2", "train.loss=dpo"], pairs, memory)
    mpo = run(work, "zero2-mpo", [*common, "train.deepspeed.stage=2", "train.loss=mpo"], pairs, memory)
    if args.gpu:
        zero3 = run(work, "zero3-dpo", [*common, "train.deepspeed.stage=3", "train.loss=dpo"], pairs, memory)
        print(f"ZeRO-3 / DDP step time: {zero3['step_time_s'] / ddp['step_time_s']:.2f}x")
    ray.shutdown()
    print(f"ZeRO-2 / DDP step time: {zero2['step_time_s'] / ddp['step_time_s']:.2f}x")
    print(f"ZeRO-2 / DDP peak memory per worker: {zero2[memory] / ddp[memory]:.2f}x")
    print(f"MPO / DPO peak memory per worker (ZeRO-2): {mpo[memory] / zero2[memory]:.2f}x")


if __name__ == "__main__":
    main()
