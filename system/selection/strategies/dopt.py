"""Greedy D-optimal design strategies: ActiveDPO, ADPO, APO (unweighted) and ADPO+ (Fisher-weighted).

All maximise the log-det gain log(1 + xᵀV⁻¹x) with x = φ (unweighted) or x = √w·φ, w = μ(1 − μ)
(ADPO+, from the ADPO paper); they differ in which features φ the workers compute for them.
"""

from __future__ import annotations

from torch import Tensor

from system.errors import SelectionError
from system.selection.design import DesignState
from system.selection.greedy import greedy_pick
from system.selection.registry import Picks, Strategy, register_strategy
from system.selection.shards import ShardedPool


class DOptimalStrategy(Strategy):
    """argmax xᵀV⁻¹x greedily over the shards, V updated after every pick (ActiveDPO paper, Eq. 4)."""

    def pick(self, pool: ShardedPool, budget: int, state: DesignState, seed: int) -> Picks:
        return greedy_pick(pool, budget, state)


@register_strategy("activedpo")
class ActiveDpoStrategy(DOptimalStrategy):
    """ActiveDPO paper: φ = difference of unit-normalised projected LoRA gradients of the implicit reward."""

    feature_kind = "gradient"


@register_strategy("adpo")
class AdpoStrategy(DOptimalStrategy):
    """ADPO paper: φ = difference of last-layer embeddings (log-linear policy at the last layer)."""

    feature_kind = "embedding"


@register_strategy("apo")
class ApoStrategy(DOptimalStrategy):
    """APO-style: fixed linear reward features from a frozen encoder; the pool is drawn once, never regenerated."""

    feature_kind = "fixed"
    regenerates = False


@register_strategy("adpo_plus")
class AdpoPlusStrategy(DOptimalStrategy):
    """ADPO paper, ADPO+: rows x = √w·φ, w = μ(1 − μ) at the current plug-in estimate, so the greedy scores
    w·φᵀV⁻¹φ and V = λI + Σ w_j φ_jφ_jᵀ. The workers recompute w for every term of V (labelled pairs too)
    whenever the estimate is refitted (each round), so weights are never frozen at pick time."""

    feature_kind = "embedding"
    needs_weights = True

    def design_rows(self, phi: Tensor, weights: Tensor | None) -> Tensor:
        return phi * self.row_scales(None if weights is None else weights.to(phi.dtype)).unsqueeze(-1)

    def row_scales(self, weights: Tensor | None) -> Tensor:
        if weights is None:
            raise SelectionError("strategy adpo_plus needs plug-in weights μ(1-μ) (none given)")
        return weights.sqrt()
