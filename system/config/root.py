"""The whole configuration, one field per section, and every check that reads more than one section.

A check inside one section lives with that section (``oracle.kind=replay`` needs ``oracle.dataset``);
a check that relates two sections lives here, so a reader finds every cross-section rule in one place.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from system.config.cluster import ClusterConfig
from system.config.features import FeaturesConfig
from system.config.generation import GenerationConfig
from system.config.loop import LoopConfig
from system.config.lora import LoraConfig
from system.config.model import ModelConfig
from system.config.oracle import OracleConfig
from system.config.section import Section
from system.config.selection import SelectionConfig
from system.config.tracking import TrackingConfig
from system.config.train import TrainConfig


class Config(Section):
    """The whole activealign configuration, one section per component."""

    model: ModelConfig = Field(ModelConfig(), description="The policy model and how its text is tokenised.")
    lora: LoraConfig = Field(LoraConfig(), description="LoRA adapters trained on the frozen base.")
    generation: GenerationConfig = Field(GenerationConfig(), description="Sampling candidate responses.")
    features: FeaturesConfig = Field(FeaturesConfig(), description="Pair features the selection scores.")
    selection: SelectionConfig = Field(SelectionConfig(), description="Which pairs get labelled each round.")
    oracle: OracleConfig = Field(OracleConfig(), description="Label source and the labelling service.")
    train: TrainConfig = Field(TrainConfig(), description="Preference optimisation.")
    loop: LoopConfig = Field(LoopConfig(), description="Rounds, prompts, evaluation and the run directory.")
    tracking: TrackingConfig = Field(TrackingConfig(), description="MLflow tracking.")
    cluster: ClusterConfig = Field(ClusterConfig(), description="Ray cluster and per-actor resources.")

    @model_validator(mode="before")
    @classmethod
    def _label_store_in_run_dir(cls, data: Any) -> Any:
        """An empty ``oracle.label_store_url`` becomes the run's own SQLite store inside ``loop.run_dir``."""
        if not isinstance(data, dict):
            return data
        oracle, loop = data.get("oracle") or {}, data.get("loop") or {}
        if not isinstance(oracle, dict) or not isinstance(loop, dict) or oracle.get("label_store_url"):
            return data
        run_dir = loop.get("run_dir") or LoopConfig.model_fields["run_dir"].default
        if not isinstance(run_dir, str):
            return data  # the field's own validation names the bad run_dir
        return {**data, "oracle": {**oracle, "label_store_url": f"sqlite:///{run_dir.rstrip('/')}/labels.db"}}

    @model_validator(mode="after")
    def _warm_start_needs_lora(self) -> Config:
        if self.train.round_start == "warm_start" and not self.lora.enabled:
            raise ValueError("train.round_start=warm_start continues the previous round's LoRA adapter (πref stays the "
                             "base policy); with lora.enabled=false there is no adapter to continue: use 'reset'")
        return self

    @model_validator(mode="after")
    def _weights_need_logistic_curvature(self) -> Config:
        from system.losses import get_loss
        from system.selection import get_strategy

        if get_loss(self.train.loss).curvature == "constant" and get_strategy(self.selection.strategy).needs_weights:
            raise ValueError(
                f"selection.strategy={self.selection.strategy} weights pairs by μ(1−μ), the curvature of a logistic "
                f"loss (DPO, MPO); train.loss={self.train.loss} is a squared loss with constant curvature, where "
                "those weights would be wrong (use adpo: with constant weights ADPO+ is ADPO)"
            )
        return self
