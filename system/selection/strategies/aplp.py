"""``aplp``: Active Preference Learning for LLMs (Muldrew et al. 2024), the heuristic baseline of seed 001.

Two stages: prompts are ranked by the predictive entropy of the policy's samples (the policy is
unsure what to say), and among the pairs of the most uncertain prompts the ones whose implicit
reward margin |r(x, y1) − r(x, y2)| is largest are labelled (the model is confident about the
preference, so a contradicting label corrects it most).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from system.errors import SelectionError
from system.selection.design import DesignState
from system.selection.registry import Picks, PoolInputs, Strategy, register_strategy


@register_strategy("aplp")
class AplpStrategy(Strategy):
    """Entropy-filtered, certainty-ranked selection.

    The entropy stage keeps the pairs of the highest-entropy prompts until at least
    ``oversample · budget`` pairs are kept (whole prompts at a time); the certainty stage picks the
    ``budget`` kept pairs with the largest |margin| (ties → smaller index). The reported score is |margin|.
    """

    feature_kind = "gradient"
    oversample = 2.0

    def select(self, pool: PoolInputs, budget: int, state: DesignState, blocked: Tensor, seed: int) -> Picks:
        if pool.prompt_entropy is None or pool.reward_margin is None:
            raise SelectionError("strategy aplp needs per-pair prompt_entropy and reward_margin (none given)")
        entropy = pool.prompt_entropy.to(torch.float64).masked_fill(blocked, float("-inf"))
        certainty = pool.reward_margin.to(torch.float64).abs()
        # Stable sorts: equal entropies (the pairs of one prompt) stay together in index order.
        by_entropy = torch.sort(entropy, descending=True, stable=True).indices
        by_entropy = by_entropy[~blocked[by_entropy]]
        keep = min(by_entropy.numel(), math.ceil(self.oversample * budget))
        if keep < by_entropy.numel():
            threshold = entropy[by_entropy[keep - 1]]
            keep = int((entropy[by_entropy] >= threshold).sum())
        kept = torch.sort(by_entropy[:keep]).values
        order = kept[torch.sort(certainty[kept], descending=True, stable=True).indices][:budget].tolist()
        for index in order:
            state.update(pool.phi[index])
        return Picks(order, [float(certainty[index]) for index in order])
