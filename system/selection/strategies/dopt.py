"""Greedy D-optimal design strategies: ActiveDPO, ADPO, APO (unweighted) and ADPO+ (Fisher-weighted).

All maximise the log-det gain log(1 + xᵀV⁻¹x) with x = φ (unweighted) or x = √w·φ, w = μ(1 − μ)
(ADPO+, seed 000); they differ in which features φ the active loop computes for them.
"""

from __future__ import annotations

from torch import Tensor

from system.errors import SelectionError
from system.selection.design import DesignState
from system.selection.greedy import greedy_select
from system.selection.registry import Picks, PoolInputs, Strategy, register_strategy


class DOptimalStrategy(Strategy):
    """argmax φᵀV⁻¹φ greedily, V updated after every pick (seed 001 Eq. 4)."""

    def select(self, pool: PoolInputs, budget: int, state: DesignState, blocked: Tensor, seed: int) -> Picks:
        return greedy_select(pool.phi, budget, state, blocked)


@register_strategy("activedpo")
class ActiveDpoStrategy(DOptimalStrategy):
    """Seed 001: φ = difference of unit-normalised projected LoRA gradients of the implicit reward."""

    feature_kind = "gradient"


@register_strategy("adpo")
class AdpoStrategy(DOptimalStrategy):
    """Seed 000 ADPO: φ = difference of last-layer embeddings (log-linear policy at the last layer)."""

    feature_kind = "embedding"


@register_strategy("apo")
class ApoStrategy(DOptimalStrategy):
    """APO-style: fixed linear reward features from a frozen encoder; candidates are not regenerated."""

    feature_kind = "fixed"
    regenerates = False


@register_strategy("adpo_plus")
class AdpoPlusStrategy(Strategy):
    """Seed 000 ADPO+: score w·φᵀV⁻¹φ and update V with √w·φ, w = μ(1 − μ) from the plug-in estimate."""

    feature_kind = "embedding"
    needs_weights = True

    def select(self, pool: PoolInputs, budget: int, state: DesignState, blocked: Tensor, seed: int) -> Picks:
        if pool.weights is None:
            raise SelectionError("strategy adpo_plus needs plug-in weights μ(1-μ) (none given)")
        scaled = pool.phi.to(state.dtype) * pool.weights.to(state.dtype).sqrt().unsqueeze(-1)
        return greedy_select(scaled, budget, state, blocked)
