"""Pair features for selection: seeded-projected LoRA gradients (ActiveDPO) and last-layer embeddings (ADPO)."""

from system.features.embeddings import embedding_features, implicit_reward_margins, pooled_hidden_states, prompt_entropy
from system.features.gradients import gradient_features, lora_modules, projected_gradients, projection_for
from system.features.projection import ModuleShape, SeededProjection
from system.selection.plugin import plugin_weights

__all__ = [
    "ModuleShape",
    "SeededProjection",
    "embedding_features",
    "gradient_features",
    "implicit_reward_margins",
    "lora_modules",
    "plugin_weights",
    "pooled_hidden_states",
    "projected_gradients",
    "projection_for",
    "prompt_entropy",
]
