"""Pair features for selection: seeded-projected LoRA gradients (ActiveDPO) and last-layer embeddings (ADPO)."""

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.features.embeddings import (
    embedding_features,
    fixed_encoder_features,
    implicit_reward_margins,
    pooled_hidden_states,
    prompt_entropy,
)
from system.features.gradients import gradient_features, lora_modules, projected_gradients, projection_for
from system.features.projection import ModuleShape, SeededProjection
from system.selection.plugin import plugin_weights
from system.types import CandidatePair

PairFeatures = Callable[[torch.nn.Module, PreTrainedTokenizerBase, Sequence[CandidatePair], Config], torch.Tensor]
FEATURES_BY_KIND: dict[str, PairFeatures] = {
    "gradient": gradient_features,
    "embedding": embedding_features,
    "fixed": fixed_encoder_features,
}
"""The feature function for each ``Strategy.feature_kind``."""

__all__ = [
    "FEATURES_BY_KIND",
    "ModuleShape",
    "SeededProjection",
    "embedding_features",
    "fixed_encoder_features",
    "gradient_features",
    "implicit_reward_margins",
    "lora_modules",
    "plugin_weights",
    "pooled_hidden_states",
    "projected_gradients",
    "projection_for",
    "prompt_entropy",
]
