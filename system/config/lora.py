"""``lora``: the LoRA adapters trained on the frozen base."""

from __future__ import annotations

from pydantic import Field

from system.config.section import Section


class LoraConfig(Section):
    """LoRA adapters (peft). ``enabled: false`` trains full weights."""

    enabled: bool = Field(
        True,
        description="Train LoRA adapters on a frozen base (the base doubles as πref; only adapters are synced to "
        "generation). False trains all weights; gradient features (ActiveDPO) then fail, as they project LoRA "
        "gradients.",
    )
    r: int = Field(
        8, ge=1, description="LoRA rank r of each adapter pair B·A (vLLM is told max(r, 8) as its largest rank)."
    )
    alpha: float = Field(16.0, gt=0, description="LoRA scale α; the adapter update is multiplied by α / r.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout probability on the adapter inputs while training.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Names (suffixes) of the linear layers that get adapters; the default is every attention "
        "projection of a Llama-style model.",
    )
