"""End-to-end training on the marker task: the loss falls and held-out prompts prefer the marker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM

from system.config import LoraConfig, ModelConfig
from system.errors import DataError
from system.models.loading import load_policy
from system.models.logprobs import policy_and_reference_logps, sequence_logps
from system.training import collate_preferences, train_preferences
from system.training.checkpoint import REFERENCE_FILE
from tests.system.training.conftest import training_config

BETA = 0.1


def _heldout_margins(model, tokenizer, pairs, model_cfg: ModelConfig) -> torch.Tensor:
    """β·[(log πθ − log πref)(y_w) − (log πθ − log πref)(y_l)] per held-out pair, πref = adapters off."""
    model.eval()
    with torch.no_grad():
        rows = collate_preferences(tokenizer, pairs, model_cfg).pair_sequences
        policy, reference = policy_and_reference_logps(model, rows)
    log_ratio = policy - reference
    return BETA * (log_ratio[: len(pairs)] - log_ratio[len(pairs) :])


@pytest.mark.parametrize("loss", ["dpo", "ipo", "mpo"])
def test_training_learns_the_marker(loss, model_cfg, lora_cfg, train_pairs, heldout_pairs, tmp_path: Path) -> None:
    # MPO's pair policy σ(log π(y_w) − log π(y_l)) saturates on summed log-probs of unequal lengths: normalise them.
    model_cfg = model_cfg.model_copy(update={"length_normalize": loss == "mpo"})
    cfg = training_config(model_cfg, lora_cfg, loss=loss, beta=BETA, tau=0.05 if loss == "mpo" else 0.0)
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    probe = next(module for module in model.modules() if isinstance(module, LoraLayer))
    adapters_off_per_forward: list[bool] = []
    probe.register_forward_pre_hook(lambda module, args: adapters_off_per_forward.append(module.disable_adapters))
    epochs_seen: list[int] = []

    def on_epoch_end(epoch: int, metrics: dict[str, float]) -> None:
        epochs_seen.append(epoch)
        adapters_off_per_forward.append(None)  # type: ignore[arg-type]  # marks an epoch boundary

    result = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path / "run", on_epoch_end=on_epoch_end)

    assert epochs_seen == [1, 2, 3] and result.epochs_completed == 3 and result.optimizer_steps == 3 * 3
    # πref only runs before the first training step (the offline pass); training steps keep adapters on.
    first_step = adapters_off_per_forward.index(False)
    assert first_step > 0 and not any(adapters_off_per_forward[first_step:])
    losses = [metrics["loss"] for metrics in result.epoch_metrics]
    assert losses[-1] < losses[0] - 1e-3, losses
    margins = _heldout_margins(model, tokenizer, heldout_pairs, model_cfg)
    assert margins.mean() > 0 and (margins > 0).float().mean() >= 0.9, margins
    if loss == "mpo":
        stored = torch.load(tmp_path / "run" / "checkpoint" / REFERENCE_FILE, weights_only=True)  # plain lists
        assert len(stored["pair_prob_chosen"]) == len(train_pairs) and all(len(s) == 2 for s in stored["samples"])


def test_saved_adapter_is_peft_format(model_cfg, lora_cfg, train_pairs, heldout_pairs, tmp_path: Path) -> None:
    cfg = training_config(model_cfg, lora_cfg, epochs=1)
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    result = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path / "run")
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_cfg.path), result.adapter_dir)
    rows = collate_preferences(tokenizer, heldout_pairs, model_cfg).pair_sequences
    model.eval()
    with torch.no_grad():
        trained = sequence_logps(model, rows)
        assert torch.allclose(sequence_logps(reloaded, rows), trained, atol=1e-6)
        base = AutoModelForCausalLM.from_pretrained(model_cfg.path)
        assert not torch.allclose(sequence_logps(base, rows), trained, atol=1e-3)


def test_full_weight_training_and_sft_warmup(model_cfg, train_pairs, tmp_path: Path) -> None:
    no_lora = LoraConfig(enabled=False)
    cfg = training_config(model_cfg, no_lora, epochs=1, lr=1e-3, sft_warmup={"enabled": True, "epochs": 1, "lr": 1e-3})
    model, tokenizer = load_policy(model_cfg, no_lora)
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    result = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path / "run")
    assert result.epoch_metrics[0]["rewards/accuracy"] >= 0.0 and torch.isfinite(torch.tensor(result.final_loss))
    assert (result.adapter_dir / "model.safetensors").exists()
    assert any(not torch.equal(before[name], param) for name, param in model.named_parameters())


def test_no_pairs_is_a_data_error(model_cfg, lora_cfg, tmp_path: Path) -> None:
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    with pytest.raises(DataError, match="no preference pairs"):
        train_preferences(model, tokenizer, [], training_config(model_cfg, lora_cfg), tmp_path)
