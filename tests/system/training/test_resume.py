"""A run interrupted after an epoch and resumed in a fresh model ends exactly where the uninterrupted run ends."""

from __future__ import annotations

from pathlib import Path

import torch

from system.config import LoraConfig, ModelConfig
from system.models.loading import load_policy
from system.training import train_preferences
from tests.system.training.conftest import training_config


def _trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}


def test_resume_equals_uninterrupted(model_cfg: ModelConfig, train_pairs, tmp_path: Path) -> None:
    lora = LoraConfig(r=4, alpha=8.0, dropout=0.1, target_modules=["q_proj", "v_proj"])  # dropout: RNG must resume too
    full_cfg = training_config(model_cfg, lora, epochs=2, batch_size=6, grad_accum_steps=2)
    uninterrupted, tokenizer = load_policy(model_cfg, lora)
    expected = train_preferences(uninterrupted, tokenizer, train_pairs, full_cfg, tmp_path / "straight")

    first_half, _ = load_policy(model_cfg, lora)
    interrupted_dir = tmp_path / "interrupted"
    half = train_preferences(first_half, tokenizer, train_pairs, full_cfg.model_copy(
        update={"train": full_cfg.train.model_copy(update={"epochs": 1})}), interrupted_dir)
    assert half.epochs_completed == 1
    resumed_model, _ = load_policy(model_cfg, lora)  # a fresh process would start from here,
    torch.manual_seed(12345)  # with its own RNG state
    resumed = train_preferences(resumed_model, tokenizer, train_pairs, full_cfg, interrupted_dir, resume=True)

    assert resumed.epochs_completed == 2 and resumed.optimizer_steps == expected.optimizer_steps == 2 * 2
    assert resumed.step_losses == expected.step_losses
    assert resumed.final_loss == expected.final_loss
    want, got = _trainable(uninterrupted), _trainable(resumed_model)
    assert want.keys() == got.keys() and all(torch.equal(want[name], got[name]) for name in want)
    assert not torch.equal(want[next(iter(want))], _trainable(load_policy(model_cfg, lora)[0])[next(iter(want))])


def test_finished_run_resumes_to_nothing(model_cfg: ModelConfig, lora_cfg: LoraConfig, train_pairs, tmp_path):
    cfg = training_config(model_cfg, lora_cfg, epochs=1)
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    first = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path)
    again, _ = load_policy(model_cfg, lora_cfg)
    second = train_preferences(again, tokenizer, train_pairs, cfg, tmp_path, resume=True)
    assert second.step_losses == first.step_losses and second.optimizer_steps == first.optimizer_steps
    want, got = _trainable(model), _trainable(again)
    assert all(torch.equal(want[name], got[name]) for name in want)
