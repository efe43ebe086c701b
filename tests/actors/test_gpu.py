"""CUDA-only checks of the distributed body: vLLM engine on a GPU, DeepSpeed ZeRO-3 in bf16, NCCL all-reduce.

They skip on machines without CUDA (CI's CPU boxes); run them with ``pytest -m gpu tests/actors/test_gpu.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from system.config import load_config
from tests.actors.logprob_check import assert_candidate_logprobs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_vllm_engine_on_cuda_matches_hf_log_probs(ray_cluster, tiny_model_dir):
    pytest.importorskip("vllm")
    from actors.generation import GenerationFleet
    from system.models.loading import load_policy
    from system.types import PromptRecord

    config = load_config("configs/tiny.yaml", [f"model.path={tiny_model_dir}", "generation.engine=auto",
                                               "generation.num_actors=1", "cluster.generation.num_gpus=1"])
    fleet = GenerationFleet(config)
    assert fleet.setup() == ["vllm"]
    candidates = fleet.generate([PromptRecord("Tell me about the cat.", "p0")], n=2)
    fleet.shutdown()
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    assert_candidate_logprobs(model, tokenizer, config.model, candidates, abs_tol=5e-3)


def test_zero3_bf16_training_on_gpus(ray_cluster, tiny_model_dir, tmp_path):
    from actors.trainer import Trainer
    from system.types import PreferencePair

    workers = min(2, torch.cuda.device_count())
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", f"train.num_workers={workers}", "train.use_gpu=true", "train.epochs=2",
        "train.batch_size=4", "train.lr=5e-3", "train.deepspeed.stage=3", "train.deepspeed.precision=bf16",
        "cluster.trainer.num_gpus=1",
    ])
    pairs = [PreferencePair(f"Tell me about cat {i}.", "Please, thank you.", "No.") for i in range(8)]
    adapter, history = Trainer(config).fit(pairs, tmp_path)
    assert (adapter / "adapter_model.safetensors").exists()
    assert history[-1]["loss"] < history[0]["loss"]


def test_nccl_all_reduce_between_train_workers(ray_cluster, tmp_path):
    import ray.train
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    def all_reduce(loop: dict) -> None:
        rank = ray.train.get_context().get_world_rank()
        value = torch.tensor([float(rank + 1)], device="cuda")
        torch.distributed.all_reduce(value)
        (Path(loop["out"]) / f"rank{rank}.txt").write_text(str(float(value)))

    workers = min(2, torch.cuda.device_count())
    TorchTrainer(all_reduce, train_loop_config={"out": str(tmp_path)},
                 scaling_config=ScalingConfig(num_workers=workers, use_gpu=True),
                 torch_config=TorchConfig(backend="nccl")).fit()
    sums = [float((tmp_path / f"rank{rank}.txt").read_text()) for rank in range(workers)]
    assert sums == [workers * (workers + 1) / 2] * workers


def test_selection_on_gpu_feature_workers_and_selector_picks_as_on_the_cpu(ray_cluster, tiny_model_dir, tmp_path):
    from actors.features import FeatureWorkerGroup
    from actors.selector import Selector
    from system.selection import LocalPool, select_round
    from system.selection.shards import blocked_rows

    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "features.num_workers=2", "features.projection_dim=256",
        "cluster.features.num_gpus=0.25", "cluster.selector.num_gpus=0.25", "selection.device=cuda",
    ])
    workers = FeatureWorkerGroup(config, tmp_path / "feature-state")
    workers.setup()
    phi = torch.randn(5001, 256, generator=torch.Generator().manual_seed(0))
    pair_ids = [f"pair-{i}" for i in range(len(phi))]
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    result = selector.select(workers, budget=100, strategy="adpo", round_index=0)
    rows = phi.double()
    expected, _ = select_round(LocalPool(rows, blocked_rows(rows)), pair_ids, rows[:0], 100, "adpo", 0,
                               config.selection.reg, config.selection.refactor_every, config.selection.seed)
    selector.shutdown()
    workers.shutdown()
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9)
