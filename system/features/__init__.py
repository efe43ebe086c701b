"""Pair features for selection: seeded-projected LoRA gradients (ActiveDPO) and last-layer embeddings (ADPO), and
the worker-side step that turns them into a strategy's design rows (:mod:`system.features.design_rows`)."""

from system.features.design_rows import FEATURES_BY_KIND, plugin_margins, strategy_rows
from system.features.embeddings import (
    embedding_features,
    fixed_encoder_features,
    implicit_reward_margins,
    pooled_hidden_states,
)
from system.features.gradients import gradient_features, lora_modules, projected_gradients, projection_for
from system.features.projection import ModuleShape, SeededProjection

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
    "pooled_hidden_states",
    "projected_gradients",
    "projection_for",
    "strategy_rows",
]
