"""MPO's reference data: pair probabilities from πref log-probs; D_ref(x) sampled only where not already known."""

from __future__ import annotations

import torch

from system.losses import pair_preference_prob
from system.models.loading import load_policy
from system.training import prepare_mpo_reference, prompt_key, reference_pair_logps
from tests.system.training.conftest import training_config


def test_known_samples_are_reused_and_only_missing_prompts_are_sampled(model_cfg, lora_cfg, train_pairs) -> None:
    cfg = training_config(model_cfg, lora_cfg, loss="mpo", mpo_ref_samples=2)
    model, tokenizer = load_policy(model_cfg, lora_cfg)
    pairs = train_pairs[:4]
    known = {prompt_key(pairs[0].prompt): ["KNOWN one", "KNOWN two"]}
    reference = prepare_mpo_reference(model, tokenizer, pairs, cfg, known)

    for pair, samples in zip(pairs, reference.samples, strict=True):
        if pair.prompt == pairs[0].prompt:
            assert samples == ("KNOWN one", "KNOWN two")
        else:
            assert len(samples) == 2 and not any(sample.startswith("KNOWN") for sample in samples)
    logps = reference_pair_logps(model, tokenizer, pairs, model_cfg, batch_size=2)
    expected = pair_preference_prob(logps[:, 0], logps[:, 1])
    assert torch.allclose(torch.tensor(reference.pair_prob_chosen, dtype=torch.float64), expected.double(), atol=1e-6)
