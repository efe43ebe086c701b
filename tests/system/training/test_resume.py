"""A run interrupted after a mid-epoch checkpoint and resumed in a fresh model ends bit for bit where the
uninterrupted run ends — weights, optimizer state and metrics — on the product's engines (DeepSpeed
ZeRO-2 at world size 1, as ``configs/tiny.yaml`` trains, and plain PyTorch), without Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from system.config import Config, LoraConfig, ModelConfig
from system.errors import DataError
from system.models.loading import load_policy
from system.training import fit_preferences, train_preferences
from system.training.checkpoint import directory_publisher
from system.training.engine import DEEPSPEED_TAG, TrainEngine
from tests.hostile import HostilePickle
from tests.system.training.conftest import assert_identical, saved_tensors, training_config

INTERRUPT_AFTER = 4  # checkpoints: steps 1, 2, 3 (= end of epoch 1), 4 (inside epoch 2), 5, 6 (= end of epoch 2)


class Interrupted(Exception):
    """Stands for the process dying right after a checkpoint."""


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def _engine_state(engine: TrainEngine, directory: Path) -> dict[str, Any]:
    """Everything the engine saves (weights and optimizer state), loaded back."""
    directory.mkdir()
    engine.save(directory)
    return saved_tensors(directory)


def _config(model_cfg: ModelConfig, lora: LoraConfig, engine: str) -> Config:
    # 24 pairs in batches of 5 (the last one short), 2 per step: 3 steps per epoch, the last on 1 batch
    return training_config(model_cfg, lora, epochs=2, batch_size=5, grad_accum_steps=2,
                           deepspeed={"enabled": engine == "deepspeed", "stage": 2})


@pytest.fixture(params=["torch", "deepspeed"])
def engine_kind(request) -> str:
    if request.param == "deepspeed":
        request.getfixturevalue("deepspeed_group")
    return request.param


def test_mid_epoch_resume_is_bit_identical(engine_kind: str, model_cfg: ModelConfig, train_pairs, tmp_path: Path):
    lora = LoraConfig(r=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj"])  # dropout: RNG must resume too
    cfg = _config(model_cfg, lora, engine_kind)
    uninterrupted, tokenizer = load_policy(model_cfg, lora)
    straight, straight_progress = fit_preferences(uninterrupted, tokenizer, train_pairs, cfg,
                                                  directory_publisher(tmp_path / "straight"), checkpoint_every_steps=1)
    assert straight_progress.optimizer_steps == 6 and straight_progress.epoch == 2

    ckpt_dir, published = tmp_path / "interrupted", [0]
    publish = directory_publisher(ckpt_dir)

    def publish_then_die(write, metrics) -> None:
        publish(write, metrics)
        published[0] += 1
        if published[0] == INTERRUPT_AFTER:
            raise Interrupted

    first_half, _ = load_policy(model_cfg, lora)
    with pytest.raises(Interrupted):
        fit_preferences(first_half, tokenizer, train_pairs, cfg, publish_then_die, checkpoint_every_steps=1)
    resumed_model, _ = load_policy(model_cfg, lora)  # a fresh process would start from here,
    torch.manual_seed(12345)  # with its own RNG state
    resumed, progress = fit_preferences(resumed_model, tokenizer, train_pairs, cfg, publish, ckpt_dir,
                                        checkpoint_every_steps=1)

    assert progress == straight_progress  # position, step count and every epoch's metrics, bit for bit
    assert_identical(_trainable(uninterrupted), _trainable(resumed_model))
    assert_identical(_engine_state(straight, tmp_path / "want"), _engine_state(resumed, tmp_path / "got"))
    untrained = _trainable(load_policy(model_cfg, lora)[0])
    assert not any(torch.equal(untrained[name], param) for name, param in _trainable(resumed_model).items())


def test_deepspeed_steps_the_short_last_window_like_torch(deepspeed_group, model_cfg, lora_cfg, train_pairs):
    """Both engines take 3 steps per epoch (the third on one batch of 4 pairs) and land on the same weights."""
    models = {}
    for kind in ("torch", "deepspeed"):
        model, tokenizer = load_policy(model_cfg, lora_cfg)
        _, progress = fit_preferences(model, tokenizer, train_pairs, _config(model_cfg, lora_cfg, kind),
                                      lambda write, metrics: None)
        assert progress.optimizer_steps == 6
        models[kind] = _trainable(model)
    for name, param in models["torch"].items():
        torch.testing.assert_close(models["deepspeed"][name], param, rtol=1e-5, atol=1e-6)


def test_finished_run_resumes_to_nothing(model_cfg: ModelConfig, lora_cfg: LoraConfig, train_pairs, tmp_path):
    cfg = training_config(model_cfg, lora_cfg, epochs=1)
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    first = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path)
    again, _ = load_policy(model_cfg, lora_cfg)
    second = train_preferences(again, tokenizer, train_pairs, cfg, tmp_path, resume=True)
    assert second.epoch_metrics == first.epoch_metrics and second.optimizer_steps == first.optimizer_steps
    want, got = _trainable(model), _trainable(again)
    assert all(torch.equal(want[name], got[name]) for name in want)


def test_deepspeed_checkpoint_is_vetted_before_deepspeed_unpickles_it(
    deepspeed_group, model_cfg, train_pairs, tmp_path: Path
) -> None:
    """DeepSpeed reads its own files with weights_only=False; the engine vets them first."""
    lora = LoraConfig(r=4, alpha=8.0, target_modules=["q_proj", "v_proj"])
    cfg = training_config(model_cfg, lora, epochs=1, batch_size=5, grad_accum_steps=2,
                          deepspeed={"enabled": True, "stage": 2})
    ckpt = tmp_path / "ckpt"
    model, tokenizer = load_policy(model_cfg, lora)
    fit_preferences(model, tokenizer, train_pairs, cfg, directory_publisher(ckpt), checkpoint_every_steps=1)
    resumed, _ = load_policy(model_cfg, lora)
    fit_preferences(resumed, tokenizer, train_pairs, cfg, directory_publisher(ckpt), ckpt,
                    checkpoint_every_steps=1)  # DeepSpeed's real files pass the vetting

    marker = tmp_path / "marker"
    optimizer_file = next((ckpt / DEEPSPEED_TAG).glob("*optim_states.pt"))
    torch.save({"optimizer_state_dict": HostilePickle(marker)}, optimizer_file)
    with pytest.raises(DataError, match=rf"{optimizer_file.name}: not a tensor state file"):
        fit_preferences(load_policy(model_cfg, lora)[0], tokenizer, train_pairs, cfg,
                        directory_publisher(ckpt), ckpt, checkpoint_every_steps=1)
    assert not marker.exists()
