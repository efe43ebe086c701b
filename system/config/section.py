"""What every config section shares: unknown keys are errors, instances are immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DATASET_HINT = ("hf:NAME?split=S&revision=R&columns=SRC:DST,… names a Hugging Face dataset instead, read with "
                "datasets.load_dataset (system/data.py)")


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
