"""``features``: the pair features the selection scores."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from system.config.section import Section


class FeaturesConfig(Section):
    """Pair features for selection: projected LoRA gradients or last-layer embeddings."""

    projection_dim: int = Field(
        256, ge=1,
        description="Dimension k of the seeded random projection of the LoRA gradients (gradient features only; "
        "embedding features have the model's hidden size). The selector keeps k × k float64 matrices V and V⁻¹, "
        "512 MiB each at k = 8192.",
    )
    seed: int = Field(
        0,
        description="Seed of the gradient projection; every worker regenerates the same matrices from it, so "
        "features of different workers and rounds are comparable.",
    )
    num_workers: int = Field(
        2, ge=1,
        description="Feature worker actors, each holding the policy and one shard of the candidate pairs "
        "(each asks for cluster.features resources).",
    )
    pooling: Literal["mean", "last"] = Field(
        "mean",
        description="How embedding features pool the final hidden states of a sequence: 'mean' over the states "
        "that predict the response tokens, 'last' the state at the last non-padding position.",
    )
    batch_size: int = Field(
        8, ge=1,
        description="Pairs per forward/backward pass when computing features (2 sequences each); also the pair "
        "batch of the offline logit-error evaluation.",
    )
