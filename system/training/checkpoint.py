"""Per-epoch training checkpoints: trainable weights (peft adapter or full model), optimizer, RNG, position.

Layout of a checkpoint directory (written atomically, replacing the previous one)::

    adapter/            save_pretrained output (peft format with LoRA, else a full checkpoint)
    trainer_state.pt    optimizer state, RNG states, epochs completed, optimizer steps, loss history
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from peft.utils import load_peft_weights, set_peft_model_state_dict
from transformers import AutoModelForCausalLM

from system.errors import ModelLoadError
from system.fileio import atomic_output
from system.models.loading import unwrap

STATE_FILE = "trainer_state.pt"
WEIGHTS_DIR = "adapter"


@dataclass
class TrainerState:
    """Where training stands after a completed epoch."""

    epochs_completed: int = 0
    optimizer_steps: int = 0
    step_losses: list[float] = field(default_factory=list)
    epoch_metrics: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState, ckpt_dir: str | Path
) -> Path:
    """Write weights, optimizer, RNG states and ``state`` to ``ckpt_dir`` atomically."""
    ckpt_path = Path(ckpt_dir)
    with atomic_output(ckpt_path) as staging:
        staging.mkdir()
        unwrap(model).save_pretrained(str(staging / WEIGHTS_DIR))  # type: ignore[operator]
        payload = {
            "state": state.__dict__,
            "optimizer": optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
        }
        torch.save(payload, staging / STATE_FILE)
    return ckpt_path


def load_trainable_weights(model: torch.nn.Module, weights_dir: str | Path) -> None:
    """Copy weights saved by ``save_pretrained`` (adapter or full model) into ``model`` in place."""
    inner = unwrap(model)
    try:
        if isinstance(inner, PeftModel):
            set_peft_model_state_dict(inner, load_peft_weights(str(weights_dir)))
        else:
            inner.load_state_dict(AutoModelForCausalLM.from_pretrained(weights_dir).state_dict())
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"checkpoint {str(weights_dir)!r}: cannot load weights ({type(exc).__name__})") from None


def load_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ckpt_dir: str | Path) -> TrainerState:
    """Restore weights, optimizer and RNG states from ``ckpt_dir``; returns the saved :class:`TrainerState`."""
    ckpt_path = Path(ckpt_dir)
    load_trainable_weights(model, ckpt_path / WEIGHTS_DIR)
    payload: dict[str, Any] = torch.load(ckpt_path / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["torch_rng"])
    random.setstate(payload["python_rng"])
    return TrainerState(**payload["state"])
