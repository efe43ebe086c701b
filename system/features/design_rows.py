"""The worker side of a selection strategy, in one place: candidate pairs → the strategy's design rows.

A feature worker (and the in-process loop, and ``activealign select`` on text pools) turns pairs into rows x_i
in three steps, all here:

1. features φ_i of the strategy's ``feature_kind`` (:data:`FEATURES_BY_KIND`): projected LoRA gradients
   (:mod:`system.features.gradients`), last-layer embeddings of the policy, or of the frozen reference model
   (:mod:`system.features.embeddings`);
2. when the strategy ``needs_weights`` (ADPO+), the weight w_i = the trained loss's curvature at the pair's
   plug-in margin h_i (:func:`plugin_margins`): μ_i(1 − μ_i), μ_i = σ(h_i), for a logistic loss — all of it asked
   of the loss's :class:`~system.losses.LossSpec`;
3. the strategy's own row transform :meth:`~system.selection.registry.Strategy.design_rows` (φ_i, or √w_i·φ_i).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.features.embeddings import embedding_features, fixed_encoder_features
from system.features.gradients import gradient_features
from system.features.pairs import combine_pairs
from system.losses import PairLogps, get_loss
from system.models.logprobs import SequenceBatch, policy_and_reference_logps, sequence_logps
from system.selection.registry import Strategy
from system.types import CandidatePair

PairFeatures = Callable[[torch.nn.Module, PreTrainedTokenizerBase, Sequence[CandidatePair], Config], Tensor]
FEATURES_BY_KIND: dict[str, PairFeatures] = {
    "gradient": gradient_features,
    "embedding": embedding_features,
    "fixed": fixed_encoder_features,
}
"""The feature function for each ``Strategy.feature_kind``."""


def plugin_margins(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair], cfg: Config
) -> Tensor:
    """ADPO+'s plug-in margins h_i [N] under ``model``: the trained loss's ``margin`` of each candidate pair (y1
    first), μ_i = its ``pair_prob`` the trained model's probability that y1 is preferred.

    The weight μ(1 − μ) is the curvature of the loss actually trained in h: DPO's −log σ(h) with h the
    implicit-reward margin; MPO's pair policy πp_θ(y1≻y2|x) = σ(log πθ(y1|x) − log πθ(y2|x)) is a Bernoulli with
    logit h = that log-ratio (no β, no reference), whose Fisher information is again μ(1 − μ). The reference
    policy runs only when the loss's margin reads its log-probs (``reference == "logps"``).
    """
    spec = get_loss(cfg.train.loss)
    with_reference = spec.reference == "logps"

    def logps(batch: SequenceBatch) -> Tensor:
        """[2n, 2] (log πθ, log πref) per sequence, or [2n, 1] log πθ when the margin reads no reference."""
        with torch.no_grad():
            if with_reference:
                return torch.stack(policy_and_reference_logps(model, batch, cfg.model.length_normalize), dim=-1)
            return sequence_logps(model, batch, cfg.model.length_normalize).unsqueeze(-1)

    def margin(first: Tensor, second: Tensor) -> Tensor:
        references = (first[:, 1], second[:, 1]) if with_reference else (None, None)
        return spec.margin(PairLogps(first[:, 0], second[:, 0], *references), cfg.train)

    return combine_pairs(model, tokenizer, pairs, cfg, logps, margin)


def strategy_rows(
    rule: Strategy, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair],
    cfg: Config,
) -> Tensor:
    """The worker side of ``rule``: its features φ [N, k] of ``pairs`` under ``model`` (and, when it
    ``needs_weights``, the trained loss's curvature at :func:`plugin_margins`), turned into design rows by
    ``rule.design_rows``."""
    phi = FEATURES_BY_KIND[rule.feature_kind](model, tokenizer, pairs, cfg)
    weights = None
    if rule.needs_weights:
        weights = get_loss(cfg.train.loss).curvature_weights(plugin_margins(model, tokenizer, pairs, cfg))
    return rule.design_rows(phi, weights)
