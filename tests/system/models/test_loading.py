"""Policy loading, LoRA from config, the adapters-off reference, adapter save/load, bad model paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from system.config import LoraConfig, ModelConfig
from system.errors import ModelLoadError
from system.models.loading import load_policy, reference_mode, save_adapter, serve_adapter
from system.models.logprobs import encode_sequences, sequence_logps

PROMPTS = ["Tell me about a kitten.", "What should I feed my cat?"]
RESPONSES = [" A kitten sleeps a lot.", " Good food, please."]


def _perturb_lora(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))


def test_lora_from_config(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> None:
    model, _ = load_policy(model_cfg, lora_cfg)
    assert isinstance(model, PeftModel)
    config = model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 16.0, 0.0)
    assert set(config.target_modules) == set(lora_cfg.target_modules)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert model.training


def test_reference_mode_is_the_base_model(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> None:
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg)
    base = AutoModelForCausalLM.from_pretrained(model_cfg.path)
    with torch.no_grad():
        base_logps = sequence_logps(base, batch)
        assert torch.allclose(sequence_logps(model, batch), base_logps, atol=1e-5)  # fresh LoRA: B = 0
        _perturb_lora(model)
        policy_logps = sequence_logps(model, batch)
        with reference_mode(model):
            reference_logps = sequence_logps(model, batch)
        assert (policy_logps - base_logps).abs().min() > 1e-3
        assert torch.allclose(reference_logps, base_logps, atol=1e-5)
        assert torch.allclose(sequence_logps(model, batch), policy_logps)  # adapters back on afterwards


def test_saved_adapter_loads_back_identically(model_cfg: ModelConfig, lora_cfg: LoraConfig, tmp_path: Path) -> None:
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    _perturb_lora(model)
    out = save_adapter(model, tmp_path / "adapter")
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_cfg.path), out)
    ours, _ = load_policy(model_cfg, lora_cfg, adapter_path=out, is_trainable=False)
    with torch.no_grad():
        expected = sequence_logps(model, batch)
        assert torch.allclose(sequence_logps(reloaded, batch), expected, atol=1e-6)
        assert torch.allclose(sequence_logps(ours, batch), expected, atol=1e-6)
    assert not ours.training and not any(p.requires_grad for p in ours.parameters())
    save_adapter(model, out)  # overwriting an existing adapter leaves no staging directories behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def test_full_weights_without_lora(model_cfg: ModelConfig, tmp_path: Path) -> None:
    model, _ = load_policy(model_cfg, LoraConfig(enabled=False))
    assert not isinstance(model, PeftModel)
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TypeError, match="precompute reference log-probs"), reference_mode(model):
        pass
    out = save_adapter(model, tmp_path / "full")
    reloaded, _ = load_policy(model_cfg, LoraConfig(enabled=False), adapter_path=out)
    expected, actual = model.state_dict(), reloaded.state_dict()
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)


def test_build_tiny_when_missing(model_cfg: ModelConfig, lora_cfg: LoraConfig, tmp_path: Path) -> None:
    cfg = model_cfg.model_copy(update={"path": str(tmp_path / "built"), "build_tiny": True})
    model, tokenizer = load_policy(cfg, lora_cfg)
    assert (tmp_path / "built" / "config.json").exists() and len(tokenizer) == cfg.tiny.vocab_size


def test_unreadable_model_path_is_one_line(model_cfg: ModelConfig, lora_cfg: LoraConfig, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError) as info:
        load_policy(model_cfg.model_copy(update={"path": str(missing)}), lora_cfg)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    assert info.value.__suppress_context__


def test_corrupt_checkpoint_and_adapter(model_cfg: ModelConfig, lora_cfg: LoraConfig, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="broken"):
        load_policy(model_cfg.model_copy(update={"path": str(broken)}), lora_cfg)
    empty_adapter = tmp_path / "adapter"
    empty_adapter.mkdir()
    with pytest.raises(ModelLoadError, match=r"adapter .*adapter'"):
        load_policy(model_cfg, lora_cfg, adapter_path=empty_adapter)


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full-weights"])
def test_serve_adapter_gives_the_saved_policy(model_cfg: ModelConfig, lora_cfg: LoraConfig, tmp_path: Path,
                                              lora: bool) -> None:
    """What generation and feature workers do on a sync: LoRA weights in place (same module), full weights reloaded."""
    cfg = lora_cfg if lora else LoraConfig(enabled=False)
    trained, _ = load_policy(model_cfg, cfg)
    with torch.no_grad():
        for param in trained.parameters():
            if param.requires_grad:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(3))
    out = save_adapter(trained, tmp_path / "v1")
    serving, _ = load_policy(model_cfg, cfg, is_trainable=False)
    served = serve_adapter(serving, model_cfg, cfg, out)
    assert (served is serving) == lora
    expected, actual = trained.state_dict(), served.state_dict()
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
