"""Short causal-LM pre-training of the offline tiny model, so that it samples words rather than noise.

A randomly initialised model emits arbitrary byte tokens (broken UTF-8, control characters); no
oracle can rank such text and DPO then learns from noise. A few hundred steps on
:func:`~system.models.corpus.pretraining_dialogues` give a base policy that answers the tiny task's
questions in English, on topic about half the time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from system.models.batch import pad_rows

logger = logging.getLogger(__name__)


def dialogue_rows(
    tokenizer: PreTrainedTokenizerBase, dialogues: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reply ids) per dialogue, tokenised as a generator sees them: ``<s> question`` then
    ``" " + reply`` and EOS."""
    return [
        (tokenizer(question)["input_ids"],
         tokenizer(" " + reply, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
        for question, reply in dialogues
    ]


def reply_batch(rows: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` ``[B, T]`` (:func:`~system.models.batch.pad_rows`) and
    ``labels`` that are −100 outside the replies (Hugging Face causal-LM loss convention)."""

    batch = pad_rows(rows, pad_token_id, "right")
    labels = batch.input_ids.masked_fill(~batch.response_mask, -100)
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "labels": labels}


def pretrain_on_dialogues(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dialogues: Sequence[tuple[str, str]],
    steps: int,
    lr: float,
    seed: int,
    batch_size: int = 32,
) -> list[float]:
    """Minimise the mean NLL per reply token, −Σ log π(y_t | x, y_<t) / |y|, with AdamW for ``steps`` steps.

    Each step draws ``batch_size`` dialogues from a generator seeded by ``seed`` (the global RNG is
    untouched), so the result depends only on the arguments.

    Returns:
        The loss of every step.
    """
    rows = dialogue_rows(tokenizer, dialogues)
    draw = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(**reply_batch(draw.sample(rows, min(batch_size, len(rows))), tokenizer.pad_token_id)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    logger.info("tiny model pre-trained for %d steps: loss %.3f → %.3f", steps, losses[0], losses[-1])
    return losses
