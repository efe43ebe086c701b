"""A user's strategy in its own module, run by name as ``tests.actors.user_strategy:half_greedy``.

Its worker side halves every feature row (so V = λI + Σ ¼φφᵀ) and its pick step is the greedy over the
sharded pool: nothing in the selector or the workers knows this class.
"""

from __future__ import annotations

from torch import Tensor

from system.selection import DesignState, Picks, ShardedPool, Strategy, greedy_pick, register_strategy


@register_strategy("half_greedy")
class HalfGreedy(Strategy):
    feature_kind = "gradient"

    def design_rows(self, phi: Tensor, weights: Tensor | None) -> Tensor:
        return 0.5 * phi

    def pick(self, pool: ShardedPool, budget: int, state: DesignState, seed: int) -> Picks:
        return greedy_pick(pool, budget, state)
