"""Evaluation of a policy: oracle reward and win-rate of generations (online), logit error (offline)."""

from system.evaluation.metrics import logit_error_metrics, mean_reward, win_rate
from system.evaluation.online import OnlineEvaluation, evaluate_generations

__all__ = ["OnlineEvaluation", "evaluate_generations", "logit_error_metrics", "mean_reward", "win_rate"]
