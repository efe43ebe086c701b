"""Pair features from per-sequence features: φ(x, y1, y2) = f(x, y1) − f(x, y2), or another combination of the two."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import Config
from system.models.logprobs import SequenceBatch, encode_sequences
from system.types import CandidatePair


def pair_differences(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[CandidatePair],
    cfg: Config,
    per_sequence: Callable[[SequenceBatch], Tensor],
) -> Tensor:
    """f(x_i, y_i1) − f(x_i, y_i2) for every pair → [N, ...] on CPU (:func:`combine_pairs` with a difference)."""
    return combine_pairs(model, tokenizer, pairs, cfg, per_sequence, torch.sub)


def combine_pairs(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[CandidatePair],
    cfg: Config,
    per_sequence: Callable[[SequenceBatch], Tensor],
    combine: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    """combine(f(x_i, y_i1), f(x_i, y_i2)) for every pair → [N, ...] on CPU.

    Pairs go ``features.batch_size`` at a time as one batch of 2n sequences (all y1 rows, then all y2
    rows), encoded with the policy's tokenizer and ``model`` limits; ``per_sequence`` maps the batch to
    [2n, ...] per-sequence features, ``combine`` the n first-response and n second-response rows to [n, ...].
    """
    if not pairs:
        raise ValueError("no pairs to featurise")
    device = next(model.parameters()).device
    combined = []
    for start in range(0, len(pairs), cfg.features.batch_size):
        chunk = pairs[start : start + cfg.features.batch_size]
        batch = encode_sequences(
            tokenizer,
            [pair.prompt for pair in chunk] * 2,
            [pair.response_1 for pair in chunk] + [pair.response_2 for pair in chunk],
            cfg.model,
            row_names=[pair.pair_id for pair in chunk] * 2,
        ).to(device)
        values = per_sequence(batch).cpu()
        combined.append(combine(values[: len(chunk)], values[len(chunk) :]))
    return torch.cat(combined)
