"""Pair features through the tokenizer: gradient and embedding differences against per-sequence references."""

from __future__ import annotations

import pytest
import torch

from system.errors import DataError
from system.features import (
    embedding_features,
    fixed_encoder_features,
    gradient_features,
    implicit_reward_margins,
    projected_gradients,
    projection_for,
    prompt_entropy,
)
from system.models.loading import reference_mode
from system.models.logprobs import encode_sequences, sequence_logps
from system.types import Candidate, CandidatePair

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
            pooled.append(hidden[response_positions - 1].mean(0))  # states that predict the response tokens
        torch.testing.assert_close(row, pooled[0] - pooled[1], rtol=1e-4, atol=1e-5)


def test_last_token_pooling_uses_the_final_real_token(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    last_cfg = cfg.model_copy(update={"features": cfg.features.model_copy(update={"pooling": "last"})})
    features = embedding_features(model, tokenizer, PAIRS[:2], last_cfg)
    pair = PAIRS[1]
    states = []
    for response in (pair.response_1, pair.response_2):
        batch = _single(model, tokenizer, cfg, pair.prompt, response)
        with torch.no_grad():
            states.append(model(input_ids=batch.input_ids, output_hidden_states=True).hidden_states[-1][0, -1])
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


def test_prompt_entropy_is_mean_negative_sample_logprob() -> None:
    candidates = [
        Candidate("x0", "p", "a", logprobs=(-1.0, -2.0)),
        Candidate("x0", "p", "b", logprobs=(-5.0,)),
        Candidate("x1", "q", "c", logprobs=(-0.5,)),
    ]
    pairs = [CandidatePair("a", "x1", "q", "c", "c"), CandidatePair("b", "x0", "p", "a", "b")]
    torch.testing.assert_close(prompt_entropy(pairs, candidates), torch.tensor([0.5, 4.0], dtype=torch.float64))
    with pytest.raises(DataError, match="prompt_id 'x9'"):
        prompt_entropy([CandidatePair("c", "x9", "r", "s", "t")], candidates)


def test_fixed_encoder_features_are_the_reference_policy_embeddings(tiny_policy) -> None:
    model, tokenizer, cfg = tiny_policy
    fixed = fixed_encoder_features(model, tokenizer, PAIRS[:2], cfg)
    with reference_mode(model):
        reference = embedding_features(model, tokenizer, PAIRS[:2], cfg)
    torch.testing.assert_close(fixed, reference)
    assert not torch.allclose(fixed, embedding_features(model, tokenizer, PAIRS[:2], cfg))  # adapters matter
