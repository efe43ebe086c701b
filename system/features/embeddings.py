"""ADPO/ADPO+ features: last-layer hidden-state differences, and the plug-in signals selection needs.

Seed 000 linearises the policy at its last layer: log πθ(y|x) ≈ Σ_t θ_{y_t}ᵀ h_{t−1} − log Z, with h the
final (normed) hidden state that feeds the LM head. The pair feature is φ = e(x, y1) − e(x, y2), where
e pools h over the positions that predict response tokens (``mean``) or takes the last real token (``last``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.errors import DataError
from system.features.pairs import pair_differences
from system.models.loading import reference_mode
from system.models.logprobs import SequenceBatch, policy_and_reference_logps
from system.types import Candidate, CandidatePair


def pooled_hidden_states(model: torch.nn.Module, batch: SequenceBatch, pooling: str) -> Tensor:
    """e(x, y) [B, d] float32: the final hidden state pooled per row (no gradients).

    ``mean`` averages h_{t−1} over the response tokens t (the states the LM head scores them from);
    ``last`` takes the state at the row's last real token.
    """
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        hidden = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        ).hidden_states[-1].float()
    if pooling == "last":
        last = batch.attention_mask.shape[1] - 1 - batch.attention_mask.flip(-1).argmax(-1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    predicting = torch.nn.functional.pad(batch.response_mask[:, 1:], (0, 1)).unsqueeze(-1).float()
    return (hidden * predicting).sum(1) / predicting.sum(1).clamp_min(1.0)


def embedding_features(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """ADPO pair features φ_i = e(x_i, y_i1) − e(x_i, y_i2) → [N, d] float32 (pooling ``features.pooling``)."""
    pooling = cfg.features.pooling
    return pair_differences(model, tokenizer, pairs, cfg, lambda batch: pooled_hidden_states(model, batch, pooling))


def fixed_encoder_features(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """APO-style features from a frozen encoder: :func:`embedding_features` of the reference policy (adapters off)."""
    with reference_mode(model):
        return embedding_features(model, tokenizer, pairs, cfg)


def implicit_reward_margins(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """h_i = r_θ(x, y1) − r_θ(x, y2), r_θ = β·(log πθ − log πref) → [N] (ADPO+ plug-in margins, APLP certainty)."""

    def rewards(batch: SequenceBatch) -> Tensor:
        with torch.no_grad():
            policy, reference = policy_and_reference_logps(model, batch, cfg.model.length_normalize)
        return cfg.train.beta * (policy - reference)

    return pair_differences(model, tokenizer, pairs, cfg, rewards)


def prompt_entropy(pairs: Sequence[CandidatePair], candidates: Sequence[Candidate]) -> Tensor:
    """APLP's predictive entropy of each pair's prompt, Ĥ(x) = −mean over sampled y of log π(y|x) → [N].

    Args:
        pairs: candidate pairs.
        candidates: the policy's samples, with per-token ``logprobs`` (log π(y|x) = their sum).

    Raises:
        DataError: a pair's prompt has no sampled candidate with log-probs.
    """
    by_prompt: dict[str, list[float]] = {}
    for candidate in candidates:
        if candidate.logprobs:
            by_prompt.setdefault(candidate.prompt_id, []).append(sum(candidate.logprobs))
    missing = {pair.prompt_id for pair in pairs} - set(by_prompt)
    if missing:
        raise DataError(f"prompt_id {sorted(missing)[0]!r}: no sampled candidate with token logprobs (APLP entropy)")
    entropy = {prompt_id: -sum(values) / len(values) for prompt_id, values in by_prompt.items()}
    return torch.tensor([entropy[pair.prompt_id] for pair in pairs], dtype=torch.float64)
