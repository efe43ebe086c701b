"""Offline evaluation (seed 000): the policy's preference logits on held-out labelled pairs vs the true ones.

The DPO policy implies a Bradley–Terry logit for a pair, ``ℓ̂ = β·[(log πθ(y1|x) − log πref(y1|x)) −
(log πθ(y2|x) − log πref(y2|x))]``; the pool's scores give the true logit ``ℓ* = s(x,y1) − s(x,y2)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from system.config import Config
from system.evaluation.metrics import logit_error_metrics
from system.models.loading import load_policy
from system.models.logprobs import encode_sequences, policy_and_reference_logps
from system.types import PreferencePair


@torch.no_grad()
def implied_logits(config: Config, adapter: str | Path | None, pairs: Sequence[PreferencePair]) -> list[float]:
    """ℓ̂ for each pair, oriented chosen − rejected (so a positive value agrees with the stored label)."""
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    logits: list[float] = []
    size = config.features.batch_size
    for start in range(0, len(pairs), size):
        chunk = pairs[start : start + size]
        batch = encode_sequences(tokenizer, [p.prompt for p in chunk] * 2,
                                 [p.chosen for p in chunk] + [p.rejected for p in chunk], config.model)
        policy, reference = policy_and_reference_logps(model, batch, config.model.length_normalize)
        ratio = policy - reference  # [2B]
        logits.extend((config.train.beta * (ratio[: len(chunk)] - ratio[len(chunk) :])).tolist())
    return logits


def offline_metrics(config: Config, adapter: str | Path | None, held_out: Sequence[PreferencePair]) -> dict[str, float]:
    """``eval/max_logit_error``, ``eval/mean_logit_error``, ``eval/error_rate`` on pairs with both scores."""
    scored = [p for p in held_out if p.score_chosen is not None and p.score_rejected is not None]
    truth = [float(p.score_chosen) - float(p.score_rejected) for p in scored]  # type: ignore[arg-type]
    metrics = logit_error_metrics(implied_logits(config, adapter, scored), truth)
    return {f"eval/{key}": value for key, value in metrics.items()}
