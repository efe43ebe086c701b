"""ADPO features: last-layer hidden-state differences (and the DPO implicit-reward margins of a pair).

The ADPO paper (docs/method.md, "Pair features") linearises the policy at its last layer:
log πθ(y|x) ≈ Σ_t θ_{y_t}ᵀ h_{t−1} − log Z, with h the final (normed) hidden state that feeds the LM head.
The pair feature is φ = e(x, y1) − e(x, y2), where e pools h over the positions that predict response
tokens (``mean``) or takes the last real token (``last``).

Each pooled e is unit-normalised, ê = e/‖e‖, before the difference, so ‖φ‖ ≤ 2 exactly — the bound the ADPO paper
assumes (‖φ‖ ≤ L) and the same bound as ActiveDPO's unit-normalised gradient features. Hence one ridge λ
(``selection.reg``, in units of ‖φ‖²) means the same for every strategy: unnormalised final hidden states
have ‖e‖² ≈ d (RMS-normed), so λ would otherwise have to be scaled by d for ADPO/APO. Per-sequence
normalisation is chosen over per-coordinate standardisation because it does not depend on the pool:
a labelled pair keeps the same feature whichever round's candidates sit beside it, so V rebuilt from
labelled pairs (ActiveDPO paper, Prop. 1) and the round's candidates are on one scale.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.features.pairs import pair_differences
from system.models.loading import reference_mode
from system.models.logprobs import SequenceBatch, policy_and_reference_logps
from system.types import CandidatePair


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
    """ADPO pair features φ_i = ê(x_i, y_i1) − ê(x_i, y_i2), ê = e/‖e‖ → [N, d] float32 (``features.pooling``)."""
    pooling = cfg.features.pooling

    def unit_embeddings(batch: SequenceBatch) -> Tensor:
        return torch.nn.functional.normalize(pooled_hidden_states(model, batch, pooling), dim=-1)

    return pair_differences(model, tokenizer, pairs, cfg, unit_embeddings)


def fixed_encoder_features(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """APO-style features from a frozen encoder: :func:`embedding_features` of the reference policy (adapters off)."""
    with reference_mode(model):
        return embedding_features(model, tokenizer, pairs, cfg)


def implicit_reward_margins(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """h_i = r_θ(x, y1) − r_θ(x, y2), r_θ = β·(log πθ − log πref) → [N]: the DPO margins the held-out logit
    error compares with the true ones."""

    def rewards(batch: SequenceBatch) -> Tensor:
        with torch.no_grad():
            policy, reference = policy_and_reference_logps(model, batch, cfg.model.length_normalize)
        return cfg.train.beta * (policy - reference)

    return pair_differences(model, tokenizer, pairs, cfg, rewards)
