"""A LoRA adapter as the trainer writes it, with random non-zero B so the policy differs from the reference."""

from __future__ import annotations

from pathlib import Path

import torch

from system.config import Config
from system.models.loading import load_policy, save_adapter


def perturbed_adapter(config: Config, out_dir: Path, seed: int) -> Path:
    """``save_adapter`` of the configured LoRA policy with every ``lora_B`` drawn from N(0, 0.3²) (seeded)."""
    model, _ = load_policy(config.model, config.lora, is_trainable=True, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return save_adapter(model, out_dir)
