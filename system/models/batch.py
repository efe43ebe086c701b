"""Padded ``prompt ‖ response`` token batches: the one data shape log-probs, features and pre-training read.

Kept apart from :mod:`system.models.logprobs` (which needs the model loader) so that the tiny model's
pre-training can build batches without importing the loader that builds the tiny model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

PaddingSide = Literal["left", "right"]


@dataclass
class SequenceBatch:
    """Padded ``prompt ‖ response`` token rows.

    Attributes:
        input_ids: ``[B, T]`` long token ids (pad id where ``attention_mask`` is 0).
        attention_mask: ``[B, T]`` long, 1 on real tokens.
        response_mask: ``[B, T]`` bool, True on response tokens (the y_t scored by log π(y_t | x, y_<t)).
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device | str) -> SequenceBatch:
        """The same batch on ``device``."""
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.response_mask.to(device))

    def select(self, rows: slice | Tensor) -> SequenceBatch:
        """The rows ``rows`` (a slice or an index tensor) of every field."""
        return SequenceBatch(self.input_ids[rows], self.attention_mask[rows], self.response_mask[rows])


def pad_rows(
    rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int, padding_side: PaddingSide
) -> SequenceBatch:
    """Pad ``(prompt_ids, response_ids)`` rows into a :class:`SequenceBatch` of width max(len(prompt)+len(response))."""
    width = max(len(prompt) + len(response) for prompt, response in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, response) in enumerate(rows):
        length = len(prompt) + len(response)
        start = width - length if padding_side == "left" else 0
        input_ids[i, start : start + length] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[i, start : start + length] = 1
        response_mask[i, start + len(prompt) : start + length] = True
    return SequenceBatch(input_ids, attention_mask, response_mask)
