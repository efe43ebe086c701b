"""A tiny Llama + LoRA built from a config (no tokenizer, no files) for feature tests."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

from system.models.batch import SequenceBatch, pad_rows
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def lora_llama() -> torch.nn.Module:
    """Tiny Llama with LoRA on q/v projections; A and B both random so every LoRA gradient is non-zero."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(LlamaForCausalLM(config), lora)
    model.eval()
    return model


def random_batch(rows: int, seed: int) -> SequenceBatch:
    """Right-padded rows of random prompts (2–6 tokens) and responses (1–8 tokens)."""
    generator = torch.Generator().manual_seed(seed)
    pieces = []
    for _ in range(rows):
        prompt_len, response_len = (int(torch.randint(2, 7, (1,), generator=generator)),
                                    int(torch.randint(1, 9, (1,), generator=generator)))
        tokens = torch.randint(1, 97, (prompt_len + response_len,), generator=generator).tolist()
        pieces.append((tokens[:prompt_len], tokens[prompt_len:]))
    return pad_rows(pieces, pad_token_id=0, padding_side="right")


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory):
    """(model, tokenizer, cfg): the configured tiny Llama + LoRA with random B, so adapters change the policy."""
    from system.config import load_config
    from system.models.loading import load_policy

    model_dir = tmp_path_factory.mktemp("features-tiny") / "model"
    cfg = load_config(
        REPO_ROOT / "configs/tiny.yaml",
        [f"model.path={model_dir}", "features.projection_dim=48", "features.batch_size=3", "train.beta=0.5"],
    )
    model, tokenizer = load_policy(cfg.model, cfg.lora, is_trainable=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model, tokenizer, cfg
