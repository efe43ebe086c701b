"""Evaluate one adapter in this process (no cluster): responses of the policy and of πref (greedy, or
``loop.eval_samples_per_prompt`` samples each), judged by the configured machine oracle. What
``activealign evaluate`` runs; the loop does the same through its actors."""

from __future__ import annotations

from pathlib import Path

import torch

from system.config import Config
from system.data import read_prompts
from system.errors import ConfigError
from system.evaluation.online import OnlineEvaluation, evaluate_generations
from system.generation import HFEngine, evaluation_params
from system.models.loading import load_policy, reference_mode
from system.oracles import build_oracle
from system.oracles.base import RewardOracle


def evaluate_adapter(config: Config, adapter: str | Path | None = None) -> OnlineEvaluation:
    """Oracle rewards of generations on ``loop.eval_prompts_path`` for the policy and for πref.

    Args:
        config: ``model``/``lora`` name the policy, ``oracle`` the judge, ``loop`` the held-out prompts.
        adapter: LoRA adapter directory; None evaluates the base policy (then equal to πref).
    """
    if config.loop.eval_prompts_path is None:
        raise ConfigError("loop.eval_prompts_path: needed to evaluate (held-out prompts)")
    prompts = read_prompts(config.loop.eval_prompts_path)[: config.loop.num_eval_prompts]
    judge = build_oracle(config.oracle)  # a judge that cannot score fails before any generation
    if not isinstance(judge, RewardOracle):
        raise ConfigError(f"oracle.kind={config.oracle.kind}: needs a reward oracle to evaluate")
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    engine = HFEngine(model, tokenizer, config.model, config.generation.batch_size)  # type: ignore[arg-type]
    params = evaluation_params(config.generation, config.loop.eval_samples_per_prompt)
    with torch.no_grad():
        policy = [c.response for c in engine.generate(prompts, params, 0)]
        with reference_mode(model):
            reference = [c.response for c in engine.generate(prompts, params, 0)]
    return evaluate_generations([p.prompt for p in prompts for _ in range(params.n)], policy, reference,
                                judge.rewards)
