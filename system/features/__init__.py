"""Pair features for selection: seeded-projected LoRA gradients (ActiveDPO) and last-layer embeddings (ADPO)."""

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.features.embeddings import (
    embedding_features,
    fixed_encoder_features,
    implicit_reward_margins,
    plugin_margins,
    pooled_hidden_states,
)
from system.features.gradients import gradient_features, lora_modules, projected_gradients, projection_for
from system.features.projection import ModuleShape, SeededProjection
from system.selection.plugin import plugin_weights
from system.selection.registry import Strategy
from system.types import CandidatePair

PairFeatures = Callable[[torch.nn.Module, PreTrainedTokenizerBase, Sequence[CandidatePair], Config], torch.Tensor]
FEATURES_BY_KIND: dict[str, PairFeatures] = {
    "gradient": gradient_features,
    "embedding": embedding_features,
    "fixed": fixed_encoder_features,
}
"""The feature function for each ``Strategy.feature_kind``."""


def strategy_rows(
    rule: Strategy, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[CandidatePair],
    cfg: Config,
) -> torch.Tensor:
    """The worker side of ``rule``: its features φ [N, k] of ``pairs`` under ``model`` (and, when it
    ``needs_weights``, w = μ(1 − μ) of :func:`plugin_margins`), turned into design rows by ``rule.design_rows``."""
    phi = FEATURES_BY_KIND[rule.feature_kind](model, tokenizer, pairs, cfg)
    weights = plugin_weights(plugin_margins(model, tokenizer, pairs, cfg)) if rule.needs_weights else None
    return rule.design_rows(phi, weights)

__all__ = [
    "FEATURES_BY_KIND",
    "ModuleShape",
    "SeededProjection",
    "embedding_features",
    "fixed_encoder_features",
    "gradient_features",
    "implicit_reward_margins",
    "lora_modules",
    "plugin_margins",
    "plugin_weights",
    "pooled_hidden_states",
    "projected_gradients",
    "projection_for",
    "strategy_rows",
]
