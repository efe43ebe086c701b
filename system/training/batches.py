"""Collating preference pairs into one padded batch: chosen, rejected (and MPO's πref samples) rows together.

All rows of a step go through the policy in a single forward pass; the batch records where each
group starts so the per-row log-probs can be split again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import ModelConfig
from system.errors import DataError
from system.models.logprobs import PaddingSide, SequenceBatch, encode_sequences
from system.types import PreferencePair, Text


@dataclass
class PreferenceBatch:
    """B preference pairs as one padded batch.

    Attributes:
        sequences: ``[2B + B·S, T]`` rows: chosen (rows 0..B−1), rejected (B..2B−1), then S samples from πref
            per pair (MPO only; pair i owns rows 2B + i·S .. 2B + (i+1)·S − 1).
        num_pairs: B.
        samples_per_pair: S (0 unless MPO).
        ref_chosen_logps: ``[B]`` precomputed log πref(y_w|x), or None to compute them during the step.
        ref_rejected_logps: ``[B]`` precomputed log πref(y_l|x).
        ref_pair_prob_chosen: ``[B]`` MPO's πp_ref(y_w≻y_l|x), precomputed offline.
    """

    sequences: SequenceBatch
    num_pairs: int
    samples_per_pair: int = 0
    ref_chosen_logps: Tensor | None = None
    ref_rejected_logps: Tensor | None = None
    ref_pair_prob_chosen: Tensor | None = None

    def to(self, device: torch.device | str) -> PreferenceBatch:
        """The same batch on ``device``."""

        def move(tensor: Tensor | None) -> Tensor | None:
            return None if tensor is None else tensor.to(device)

        return replace(
            self,
            sequences=self.sequences.to(device),
            ref_chosen_logps=move(self.ref_chosen_logps),
            ref_rejected_logps=move(self.ref_rejected_logps),
            ref_pair_prob_chosen=move(self.ref_pair_prob_chosen),
        )

    @property
    def pair_sequences(self) -> SequenceBatch:
        """The ``[2B, T]`` chosen-then-rejected rows (what a reference pass scores)."""
        return self.sequences.select(slice(0, 2 * self.num_pairs))


def collate_preferences(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[PreferencePair],
    model_cfg: ModelConfig,
    ref_logps: Tensor | None = None,
    ref_pair_prob_chosen: Tensor | None = None,
    ref_samples: Sequence[Sequence[str]] | None = None,
    padding_side: PaddingSide = "right",
) -> PreferenceBatch:
    """Tokenise and pad B pairs (and optional offline reference data aligned with them) into a batch.

    Args:
        tokenizer: the policy's tokenizer.
        pairs: B labelled pairs.
        model_cfg: length limits and truncation rule.
        ref_logps: ``[B, 2]`` precomputed (log πref(y_w|x), log πref(y_l|x)).
        ref_pair_prob_chosen: ``[B]`` MPO's precomputed πp_ref(y_w≻y_l|x).
        ref_samples: B lists of S responses sampled from πref for each pair's prompt (MPO).
        padding_side: where pad tokens go.

    Raises:
        DataError: naming the pair (id or index) whose prompt is too long, or misaligned reference data.
    """
    names = [pair.pair_id or str(i) for i, pair in enumerate(pairs)]
    prompts: list[Text] = [pair.prompt for pair in pairs] * 2
    responses: list[Text] = [pair.chosen for pair in pairs] + [pair.rejected for pair in pairs]
    row_names = names * 2
    samples_per_pair = 0
    if ref_samples is not None:
        if len(ref_samples) != len(pairs) or len({len(samples) for samples in ref_samples}) != 1:
            raise DataError(f"ref_samples: need the same number of samples for each of {len(pairs)} pairs")
        samples_per_pair = len(ref_samples[0])
        for name, pair, samples in zip(names, pairs, ref_samples, strict=True):
            prompts.extend([pair.prompt] * samples_per_pair)
            responses.extend(samples)
            row_names.extend([f"{name} (πref sample)"] * samples_per_pair)
    for tensor, label in ((ref_logps, "ref_logps"), (ref_pair_prob_chosen, "ref_pair_prob_chosen")):
        if tensor is not None and tensor.shape[0] != len(pairs):
            raise DataError(f"{label}: {tensor.shape[0]} rows for {len(pairs)} pairs")
    sequences = encode_sequences(tokenizer, prompts, responses, model_cfg, padding_side, row_names=row_names)
    return PreferenceBatch(
        sequences=sequences,
        num_pairs=len(pairs),
        samples_per_pair=samples_per_pair,
        ref_chosen_logps=None if ref_logps is None else ref_logps[:, 0],
        ref_rejected_logps=None if ref_logps is None else ref_logps[:, 1],
        ref_pair_prob_chosen=ref_pair_prob_chosen,
    )
