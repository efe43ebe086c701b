"""Online evaluation (ActiveDPO paper, §5): oracle reward of the policy's responses and win-rate vs the reference."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from system.evaluation.metrics import mean_reward, win_rate
from system.types import Text

RewardFn = Callable[[list[Text], list[str]], list[float]]
"""``rewards(prompts, responses) -> [R(x_i, y_i)]``, e.g. ``OracleClient.rewards``."""


@dataclass(frozen=True)
class OnlineEvaluation:
    """Oracle rewards of the policy's and the reference policy's responses on the same held-out prompts."""

    policy_rewards: tuple[float, ...]
    reference_rewards: tuple[float, ...]

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        """``reward``, ``reference_reward`` and ``win_rate`` (policy vs reference, ties ½) under ``prefix``."""
        return {
            f"{prefix}reward": mean_reward(self.policy_rewards),
            f"{prefix}reference_reward": mean_reward(self.reference_rewards),
            f"{prefix}win_rate": win_rate(self.policy_rewards, self.reference_rewards),
        }


def evaluate_generations(
    prompts: Sequence[Text],
    policy_responses: Sequence[str],
    reference_responses: Sequence[str],
    rewards: RewardFn,
) -> OnlineEvaluation:
    """Score both policies' responses to ``prompts`` with one oracle call.

    Args:
        prompts: held-out prompts, shape [N] (a prompt repeats once per sampled response).
        policy_responses: the current policy's response to each prompt, shape [N].
        reference_responses: the reference policy's response to each prompt, shape [N].
        rewards: the oracle's reward function.
    """
    n = len(prompts)
    if len(policy_responses) != n or len(reference_responses) != n:
        raise ValueError(
            f"evaluate_generations: {n} prompts, {len(policy_responses)} policy and "
            f"{len(reference_responses)} reference responses"
        )
    scored = rewards(list(prompts) * 2, list(policy_responses) + list(reference_responses))
    return OnlineEvaluation(tuple(scored[:n]), tuple(scored[n:]))
