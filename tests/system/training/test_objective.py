"""preference_loss against closed forms on independently computed log-probs; reference sources; MPO needs no πref."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from system.config import LoraConfig, ModelConfig
from system.errors import DataError
from system.models.logprobs import encode_sequences, sequence_logps
from system.training import collate_preferences, preference_loss
from system.types import PreferencePair
from tests.system.models.conftest import perturbed_lora_policy
from tests.system.training.conftest import training_config

BETA = 0.1


@pytest.fixture(scope="module")
def policy(model_cfg: ModelConfig, lora_cfg: LoraConfig):
    return perturbed_lora_policy(model_cfg, lora_cfg, seed=3)


def _single_logp(model: torch.nn.Module, tokenizer, model_cfg: ModelConfig, prompt: str, response: str) -> float:
    with torch.no_grad():
        return float(sequence_logps(model, encode_sequences(tokenizer, [prompt], [response], model_cfg))[0])


def test_dpo_loss_matches_closed_form_for_every_reference_source(policy, model_cfg, train_pairs) -> None:
    model, tokenizer = policy
    pairs = train_pairs[:4]
    base = AutoModelForCausalLM.from_pretrained(model_cfg.path)
    expected = []
    for pair in pairs:
        pc, pr = (_single_logp(model, tokenizer, model_cfg, pair.prompt, y) for y in (pair.chosen, pair.rejected))
        rc, rr = (_single_logp(base, tokenizer, model_cfg, pair.prompt, y) for y in (pair.chosen, pair.rejected))
        expected.append(-math.log(1.0 / (1.0 + math.exp(-BETA * ((pc - rc) - (pr - rr))))))
    cfg = training_config(model_cfg, LoraConfig(), loss="dpo", beta=BETA).train
    batch = collate_preferences(tokenizer, pairs, model_cfg)
    default_loss, metrics = preference_loss(model, batch, cfg)
    assert default_loss.item() == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert metrics["loss"] == pytest.approx(default_loss.item())
    with torch.no_grad():
        ref_rows = sequence_logps(base, batch.pair_sequences)
    via_callable, _ = preference_loss(model, batch, cfg, reference_logps=lambda rows: sequence_logps(base, rows))
    precomputed = collate_preferences(tokenizer, pairs, model_cfg, ref_logps=torch.stack(ref_rows.split(4), dim=1))
    via_batch, _ = preference_loss(model, precomputed, cfg)
    assert via_callable.item() == pytest.approx(default_loss.item(), abs=1e-6)
    assert via_batch.item() == pytest.approx(default_loss.item(), abs=1e-6)
    via_batch.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.zero_grad()


def test_mpo_loss_matches_closed_form_without_reference(policy, model_cfg, train_pairs) -> None:
    model, tokenizer = policy
    pairs = train_pairs[:3]
    samples = [[" It sleeps.", " Food."]] * 3
    ref_prob = torch.tensor([0.3, 0.5, 0.9])
    cfg = training_config(model_cfg, LoraConfig(), loss="mpo", beta=BETA, tau=0.2).train
    batch = collate_preferences(tokenizer, pairs, model_cfg, ref_pair_prob_chosen=ref_prob, ref_samples=samples)
    assert batch.sequences.input_ids.shape[0] == 3 * 2 + 3 * 2

    def forbidden(rows):
        raise AssertionError("MPO must not compute reference log-probs")

    loss, metrics = preference_loss(model, batch, cfg, reference_logps=forbidden)
    expected = []
    for pair, q in zip(pairs, ref_prob.tolist(), strict=True):
        pc, pr = (_single_logp(model, tokenizer, model_cfg, pair.prompt, y) for y in (pair.chosen, pair.rejected))
        ps = [_single_logp(model, tokenizer, model_cfg, pair.prompt, y) for y in samples[0]]
        p = 1.0 / (1.0 + math.exp(-(pc - pr)))
        kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
        expected.append(-p + BETA * kl - 0.2 * sum(ps) / len(ps))
    assert loss.item() == pytest.approx(sum(expected) / len(expected), abs=1e-5)
    assert set(metrics) >= {"loss", "pair_prob/policy", "pair_prob/reference"}


def test_mpo_batch_without_reference_data_is_rejected(policy, model_cfg, train_pairs) -> None:
    model, tokenizer = policy
    cfg = training_config(model_cfg, LoraConfig(), loss="mpo").train
    with pytest.raises(ValueError, match="train.loss=mpo needs ref_pair_prob_chosen"):
        preference_loss(model, collate_preferences(tokenizer, train_pairs[:2], model_cfg), cfg)


def test_collate_layout_and_bad_rows(policy, model_cfg) -> None:
    _, tokenizer = policy
    pairs = [PreferencePair("Hi.", " Yes, please.", " No.", pair_id="a"), PreferencePair("Tell me.", " Ok!", " Hm.")]
    batch = collate_preferences(tokenizer, pairs, model_cfg, padding_side="left")
    responses = [tokenizer.decode(row[mask]) for row, mask in zip(batch.sequences.input_ids,
                                                                     batch.sequences.response_mask, strict=True)]
    assert responses == [" Yes, please.</s>", " Ok!</s>", " No.</s>", " Hm.</s>"]
    with pytest.raises(DataError, match="ref_logps: 3 rows for 2 pairs"):
        collate_preferences(tokenizer, pairs, model_cfg, ref_logps=torch.zeros(3, 2))
    strict = model_cfg.model_copy(update={"max_prompt_length": 2, "prompt_truncation": "error"})
    with pytest.raises(DataError, match="row a: prompt has"):
        collate_preferences(tokenizer, pairs, strict)
