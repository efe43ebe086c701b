"""Ray Train + DeepSpeed trainer: ZeRO-2 over gloo with 2 workers, loss falls across two runs with resume."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from actors.trainer import Trainer, clear_stale_extension_locks, deepspeed_config, latest_checkpoint, rank_slice
from system.config import load_config
from system.models.loading import load_policy
from system.models.logprobs import encode_sequences, sequence_logps
from system.types import PreferencePair


def _pairs(count: int) -> list[PreferencePair]:
    return [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                           f"No. Cat {i} is loud.") for i in range(count)]


def test_deepspeed_config_follows_train_section():
    cfg = load_config("configs/tiny.yaml", ["train.batch_size=7", "train.grad_accum_steps=2",
                                            "train.deepspeed.stage=3", "train.deepspeed.offload_optimizer=true"])
    ds = deepspeed_config(cfg.train, world_size=2)
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["train_batch_size"] == 16
    assert ds["zero_optimization"] == {"stage": 3, "offload_optimizer": {"device": "cpu"}}
    assert ds["gradient_clipping"] == cfg.train.max_grad_norm and ds["zero_allow_untested_optimizer"]


def test_rank_slices_cover_the_batch_once():
    batch = [5, 1, 9, 4, 7]
    assert sorted(rank_slice(batch, 0, 2) + rank_slice(batch, 1, 2)) == sorted(batch)
    assert rank_slice([3], 1, 2) == [3]


@pytest.mark.slow  # two Ray Train runs with DeepSpeed start-up: ~90 s on an idle 2-core box
def test_zero2_training_loss_falls_across_resumed_runs(ray_cluster, tiny_model_dir, tmp_path):
    overrides = [f"model.path={tiny_model_dir}", "train.num_workers=2", "train.batch_size=4", "train.lr=5e-3",
                 "train.loss=dpo", "train.deepspeed.stage=2", "cluster.trainer.num_cpus=1"]
    pairs = _pairs(8)
    first_cfg = load_config("configs/tiny.yaml", [*overrides, "train.epochs=1"])
    adapter, history = Trainer(first_cfg).fit(pairs, tmp_path)
    assert [m["epoch"] for m in history] == [1] and adapter.exists()
    assert json.loads((latest_checkpoint(tmp_path / "ray_train") / "epoch.json").read_text())["epoch"] == 1

    adapter, history = Trainer(load_config("configs/tiny.yaml", [*overrides, "train.epochs=3"])).fit(pairs, tmp_path)
    assert [m["epoch"] for m in history] == [1, 2, 3]  # epoch 1 came from the checkpoint, not rerun
    # DPO starts at log 2 (policy == reference) and falls epoch after epoch, across the resume
    assert history[2]["loss"] < history[1]["loss"] < history[0]["loss"] < 0.6932

    # the saved adapter is what was trained: it prefers the chosen responses over the reference
    model, tokenizer = load_policy(first_cfg.model, first_cfg.lora, adapter_path=adapter, is_trainable=False)
    batch = encode_sequences(tokenizer, [p.prompt for p in pairs] * 2, [p.chosen for p in pairs]
                             + [p.rejected for p in pairs], first_cfg.model)
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    margin = (policy - reference)[:8] - (policy - reference)[8:]
    assert float(margin.mean()) > 0


def test_sft_warmup_runs_inside_the_ray_trainer(ray_cluster, tiny_model_dir, tmp_path):
    """A preference step too small to matter (lr 1e-9) after an SFT warm-up on the chosen responses: whatever
    the adapter learned came from the warm-up, so the chosen responses became more likely than under πref."""
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=1", "train.epochs=1", "train.lr=1e-9",
        "train.deepspeed.enabled=false", "train.sft_warmup.enabled=true", "train.sft_warmup.epochs=2",
        "train.sft_warmup.lr=1e-2", "cluster.trainer.num_cpus=1"])
    pairs = _pairs(8)
    adapter, _ = Trainer(config).fit(pairs, tmp_path)
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    batch = encode_sequences(tokenizer, [p.prompt for p in pairs], [p.chosen for p in pairs], config.model)
    with torch.no_grad():
        policy = sequence_logps(model, batch)
        with model.disable_adapter():
            reference = sequence_logps(model, batch)
    assert bool((policy > reference + 1.0).all()), (policy - reference).tolist()


def test_only_stale_extension_build_locks_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    stale, fresh = tmp_path / "py311_cpu" / "old_op" / "lock", tmp_path / "py311_cpu" / "busy_op" / "lock"
    for lock in (stale, fresh):
        lock.parent.mkdir(parents=True)
        lock.touch()
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    assert clear_stale_extension_locks(max_age_s=600) == [stale]
    assert not stale.exists() and fresh.exists()
