"""A tiny model built once per test session (hidden 64, 2 layers, 2 heads → head_dim 32)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from system.config import LoraConfig, ModelConfig, TinyModelConfig
from system.models.loading import load_policy
from system.models.tiny import build_tiny_model

TINY = TinyModelConfig(
    vocab_size=384, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
    num_key_value_heads=2, max_position_embeddings=256, seed=0,
)


@pytest.fixture(scope="module", autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread (restored after the module): tiny matmuls gain nothing from more on a shared box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", TINY)


@pytest.fixture(scope="session")
def model_cfg(tiny_model_dir: Path) -> ModelConfig:
    return ModelConfig(path=str(tiny_model_dir), tiny=TINY, max_prompt_length=48, max_response_length=32)


def perturbed_lora_policy(
    model_cfg: ModelConfig, lora_cfg: LoraConfig, seed: int
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """The tiny policy with its LoRA weights drawn from N(0, 0.05²) (fresh adapters would equal πref)."""
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(seed))
    return model, tokenizer


@pytest.fixture(scope="session")
def lora_cfg() -> LoraConfig:
    return LoraConfig(r=8, alpha=16.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"])
