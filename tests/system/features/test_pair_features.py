"""Pair features through the tokenizer: gradient and embedding differences against per-sequence references."""

from __future__ import annotations

import pytest
import torch

from system.features import (
    embedding_features,
    fixed_encoder_features,
    gradient_features,
    implicit_reward_margins,
    plugin_margins,
    projected_gradients,
    projection_for,
    strategy_rows,
)
from system.models.loading import reference_mode
from system.models.logprobs import encode_sequences, sequence_logps
from system.selection import get_strategy
from system.types import CandidatePair

PAIRS = [
    CandidatePair("p0", "x0", "Say hello.", "Hello there, friend!", "No."),
    CandidatePair("p1", "x1", "What is two plus two?", "Four.", "It is four, thank you for asking."),
    CandidatePair("p2", "x1", "What is two plus two?", "Four.", "Four."),
    CandidatePair("p3", "x2", "Name a colour.", "Blue, please.", "Green"),
    CandidatePair("p4", "x3", "Count to three.", "one two three", "three two one"),
]


def _single(model, tokenizer, cfg, prompt, response):
    return encode_sequences(tokenizer, [prompt], [response], cfg.model)


def test_gradient_features_are_unit_gradient_differences_independent_of_batching(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    features = gradient_features(model, tokenizer, PAIRS, cfg)
    assert features.shape == (5, 48) and features.dtype == torch.float32
    projection = projection_for(model, 48, cfg.features.seed)
    for pair, row in zip(PAIRS, features, strict=True):
        unit = []
        for response in (pair.response_1, pair.response_2):
            grad = projected_gradients(model, _single(model, tokenizer, cfg, pair.prompt, response), projection)[0]
            unit.append(grad / grad.norm())
        torch.testing.assert_close(row, unit[0] - unit[1], rtol=1e-4, atol=1e-5)
    assert torch.count_nonzero(features[2]) == 0  # identical responses: zero-norm, skipped by selection
    assert bool((features.norm(dim=1) <= 2 + 1e-5).all())
    assert not any(param.requires_grad for param in model.parameters())  # frozen model left as it was


def test_embedding_features_match_unpadded_per_sequence_hidden_states(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    features = embedding_features(model, tokenizer, PAIRS, cfg)
    assert features.shape == (5, 64)
    for pair, row in zip(PAIRS, features, strict=True):
        pooled = []
        for response in (pair.response_1, pair.response_2):
            batch = _single(model, tokenizer, cfg, pair.prompt, response)
            with torch.no_grad():
                hidden = model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states[-1][0]
            response_positions = torch.nonzero(batch.response_mask[0]).flatten()
            mean = hidden[response_positions - 1].mean(0)  # states that predict the response tokens
            pooled.append(mean / mean.norm())
        torch.testing.assert_close(row, pooled[0] - pooled[1], rtol=1e-4, atol=1e-5)
    assert bool((features.norm(dim=1) <= 2 + 1e-5).all())  # bounded like the unit gradient features


def test_last_token_pooling_uses_the_final_real_token(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    last_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"pooling": "last"})})
    features = embedding_features(model, tokenizer, PAIRS[:2], last_cfg)
    pair = PAIRS[1]
    states = []
    for response in (pair.response_1, pair.response_2):
        batch = _single(model, tokenizer, cfg, pair.prompt, response)
        with torch.no_grad():
            state = model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states[-1][0, -1]
            states.append(state / state.norm())
    torch.testing.assert_close(features[1], states[0] - states[1], rtol=1e-4, atol=1e-5)


def test_implicit_reward_margins_are_beta_scaled_policy_reference_differences(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    margins = implicit_reward_margins(model, tokenizer, PAIRS, cfg)
    pair = PAIRS[3]
    rewards = []
    for response in (pair.response_1, pair.response_2):
        batch = _single(model, tokenizer, cfg, pair.prompt, response)
        with torch.no_grad():
            policy = sequence_logps(model, batch)
            with reference_mode(model):
                reference = sequence_logps(model, batch)
        rewards.append(0.5 * float(policy - reference))
    assert float(margins[3]) == pytest.approx(rewards[0] - rewards[1], abs=1e-4)
    assert float(margins[2]) == 0.0 and abs(float(margins[0])) > 1e-3


def test_fixed_encoder_features_are_the_reference_policy_embeddings(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    fixed = fixed_encoder_features(model, tokenizer, PAIRS[:2], cfg)
    with reference_mode(model):
        reference = embedding_features(model, tokenizer, PAIRS[:2], cfg)
    torch.testing.assert_close(fixed, reference)
    assert not torch.allclose(fixed, embedding_features(model, tokenizer, PAIRS[:2], cfg))  # adapters matter


def test_plugin_margins_follow_the_trained_loss(tiny_policy) -> None:
    """DPO: the implicit-reward margin; MPO: the pair policy's logit log πθ(y1|x) − log πθ(y2|x)."""
    model, tokenizer, cfg = tiny_policy
    torch.testing.assert_close(plugin_margins(model, tokenizer, PAIRS, cfg),
                               implicit_reward_margins(model, tokenizer, PAIRS, cfg))
    mpo_cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"loss": "mpo"})})
    margins = plugin_margins(model, tokenizer, PAIRS, mpo_cfg)
    pair = PAIRS[0]
    with torch.no_grad():
        logps = [float(sequence_logps(model, _single(model, tokenizer, cfg, pair.prompt, response)))
                 for response in (pair.response_1, pair.response_2)]
    assert float(margins[0]) == pytest.approx(logps[0] - logps[1], abs=1e-4)


def test_adpo_plus_rows_are_sqrt_fisher_weighted_embeddings(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    rows = strategy_rows(get_strategy("adpo_plus"), model, tokenizer, PAIRS, cfg)
    margins = implicit_reward_margins(model, tokenizer, PAIRS, cfg).double()
    fisher = torch.sigmoid(margins) * torch.sigmoid(-margins)  # μ(1 − μ), without 1 − μ rounding to 0 in float32
    expected = (embedding_features(model, tokenizer, PAIRS, cfg).double() * fisher.sqrt().unsqueeze(-1)).float()
    torch.testing.assert_close(rows, expected, rtol=1e-4, atol=1e-4)  # float32 embeddings, batched apart
    torch.testing.assert_close(strategy_rows(get_strategy("activedpo"), model, tokenizer, PAIRS, cfg),
                               gradient_features(model, tokenizer, PAIRS, cfg))
