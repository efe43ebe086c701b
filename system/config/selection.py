"""``selection``: which pairs get labelled each round (strategy by registered name, budget, ridge)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from system.config.section import Section
from system.errors import ConfigError


class SelectionConfig(Section):
    """Which pairs get labelled: strategy by registered name, b pairs per round."""

    strategy: str = Field(
        "activedpo",
        description="Registered strategy name (activedpo: projected-gradient D-optimal design; adpo, adpo_plus: "
        "embedding designs, ADPO+ Fisher-weighted; apo: frozen-encoder design; ensemble: the disagreement of "
        "anchored reward heads over embedding features, SEA-style; random: uniform), or "
        "'module.path:name' to import a module that registers its own; unknown names fail before any actor starts.",
    )
    budget: int = Field(
        8, ge=1,
        description="Pairs b selected and sent to the oracle per round (capped by the candidate pairs available "
        "that round); activealign select uses it when given no --budget.",
    )
    reg: float = Field(
        1.0, gt=0,
        description="Ridge λ of the design matrix V = λI + Σ w φφᵀ the greedy strategies score pairs against "
        "(score φᵀV⁻¹φ); larger λ favours large-norm features early on.",
    )
    refactor_every: int = Field(
        64, ge=1,
        description="Recompute V⁻¹ from V after this many rank-one updates, bounding the rounding drift of "
        "repeated Sherman–Morrison updates.",
    )
    reveal_batch_size: int = Field(
        8, ge=1,
        description="Offline selection (activealign select): picks per batch, after which the picked pairs' "
        "labels are revealed and ADPO+'s plug-in estimate is refit.",
    )
    plugin_l2: float = Field(
        1.0, gt=0,
        description="Ridge λ_p of the logistic DPO fit θ̂ that gives ADPO+'s plug-in weights μ(1 − μ) in offline "
        "selection (activealign select), its own, not the evaluation fit's. Of order 1 because with few labels "
        "the data are separable: a near-unregularised θ̂ grows without bound, every μ(1 − μ) → 0 and V collapses "
        "to λI. The fit's objective at θ̂ is at most its value n·log 2 at 0, so ‖θ̂‖ ≤ √(2n·log 2/λ_p) (9.4 at "
        "n = 64 for λ_p = 1, against 942 for 1e-4); λ_p = 1 is the prior N(0, I) on θ, under which a margin θᵀφ "
        "with ‖φ‖ ≤ 2 has standard deviation ≤ 2, and it equals the default design ridge selection.reg, so the "
        "plug-in's Laplace precision λI + Σ w φφᵀ is the design matrix ADPO+ maximises. Online, the plug-in is "
        "the trained policy itself.",
    )
    seed: int = Field(0, description="Seed of the random strategy's uniform picks; round r draws with seed + r.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="Where the feature workers keep their shard of Φ and its cached scores and the selector keeps "
        "V⁻¹: 'auto' puts them on the process's GPU when it has one (the greedy's scoring and per-pick updates "
        "then run there), 'cpu' keeps them in memory, 'cuda' requires a GPU.",
    )

    @field_validator("strategy")
    @classmethod
    def _registered_strategy(cls, name: str) -> str:
        from system.selection import get_strategy  # imported here: the selection package imports this module

        try:
            get_strategy(name)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix("selection.strategy: ")) from None
        return name
