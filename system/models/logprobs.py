"""Sequence log-probabilities log π(y|x) over response tokens, batched and padding-agnostic.

A batch row is ``prompt tokens ‖ response tokens`` padded on the left or the right. The model
sees position ids counted from each row's first real token, so a row's log-probs do not depend
on its padding (left padding would otherwise shift the rotary positions).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from system.config import ModelConfig
from system.errors import DataError
from system.models.batch import PaddingSide, SequenceBatch, pad_rows
from system.models.loading import reference_mode
from system.types import Text

logger = logging.getLogger(__name__)

def _is_conversation(text: Text) -> bool:
    return isinstance(text, list)


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, prompt: Text) -> tuple[list[int], str]:
    """Token ids of a prompt, and the text they render (the chat template's generation prompt if conversational)."""
    if isinstance(prompt, list):
        rendered = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return tokenizer(rendered, add_special_tokens=False)["input_ids"], str(rendered)
    return tokenizer(prompt, add_special_tokens=True)["input_ids"], str(prompt)


def _response_ids(tokenizer: PreTrainedTokenizerBase, prompt: Text, prompt_text: str, response: Text) -> list[int]:
    """Token ids of a response: conversational → the chat template's assistant turn; plain → text + EOS."""
    if _is_conversation(prompt) or _is_conversation(response):
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        reply = response if isinstance(response, list) else [{"role": "assistant", "content": response}]
        full = str(tokenizer.apply_chat_template(messages + reply, tokenize=False))
        if not _is_conversation(prompt):
            prompt_text = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        if not full.startswith(prompt_text):
            raise DataError("chat template renders the prompt differently with and without the response")
        return tokenizer(full[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def fit_prompt(ids: list[int], model_cfg: ModelConfig, row: str) -> list[int]:
    limit = model_cfg.max_prompt_length
    if len(ids) <= limit:
        return ids
    if model_cfg.prompt_truncation == "error":
        raise DataError(
            f"row {row}: prompt has {len(ids)} tokens, more than model.max_prompt_length={limit} "
            "(set model.prompt_truncation=left to keep its last tokens)"
        )
    return ids[-limit:]


def encode_sequences(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Text],
    responses: Sequence[Text],
    model_cfg: ModelConfig,
    padding_side: PaddingSide = "right",
    row_names: Sequence[str] | None = None,
) -> SequenceBatch:
    """Tokenise ``prompt ‖ response`` rows and pad them into one batch.

    Prompt and response are tokenised separately (the response tokens are exactly those a generator
    emits after the prompt). Conversational prompts use the tokenizer's chat template with the
    generation prompt; plain responses get an EOS appended. A prompt longer than
    ``model.max_prompt_length`` keeps its last tokens (``prompt_truncation: left``) or raises; a
    response longer than ``model.max_response_length`` keeps its first tokens.

    Args:
        tokenizer: the policy's tokenizer (needs a pad token).
        prompts: ``B`` prompts, plain strings or message lists.
        responses: ``B`` responses, plain strings or assistant message lists.
        model_cfg: ``model`` section (length limits, truncation policy).
        padding_side: where pad tokens go.
        row_names: names of the rows in error messages (default: their index).

    Raises:
        DataError: naming the row, for an over-long prompt under ``prompt_truncation: error``,
            an empty prompt or response, or mismatched lengths.
    """
    if len(prompts) != len(responses):
        raise DataError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        raise DataError("cannot encode an empty batch")
    names = [str(name) for name in row_names] if row_names is not None else [str(i) for i in range(len(prompts))]
    rows: list[tuple[list[int], list[int]]] = []
    truncated = 0
    for name, prompt, response in zip(names, prompts, responses, strict=True):
        prompt_ids, prompt_text = prompt_token_ids(tokenizer, prompt)
        response_ids = _response_ids(tokenizer, prompt, prompt_text, response)
        if not prompt_ids or not response_ids:
            raise DataError(f"row {name}: {'prompt' if not prompt_ids else 'response'} encodes to no tokens")
        fitted = fit_prompt(prompt_ids, model_cfg, name)
        truncated += len(fitted) < len(prompt_ids) or len(response_ids) > model_cfg.max_response_length
        rows.append((fitted, response_ids[: model_cfg.max_response_length]))
    if truncated:
        logger.warning("truncated %d of %d rows to model.max_prompt_length/max_response_length", truncated, len(rows))
    return pad_rows(rows, pad_token_id=_pad_id(tokenizer), padding_side=padding_side)


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise DataError("tokenizer has neither a pad nor an EOS token")
    return int(pad_id)


def token_logps(model: torch.nn.Module, batch: SequenceBatch) -> Tensor:
    """Per-token log π(y_t | x, y_<t) on response positions, 0 elsewhere.

    The logit at position t−1 scores token t; position ids restart at 0 on each row's first real
    token, so left- and right-padded rows give the same values as the unpadded row. The LM head
    runs only from the batch's earliest response position on (``logits_to_keep``).

    Args:
        model: a causal LM (or a wrapper whose forward takes ``input_ids``, ``attention_mask``,
            ``position_ids``, ``logits_to_keep`` and returns ``.logits``).
        batch: the rows, on the model's device.

    Returns:
        ``[B, T]`` float32 log-probs (differentiable w.r.t. the model's trainable weights).
    """
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    width = batch.input_ids.shape[1]
    # Only positions from the earliest response token on need logits: skip the LM head over the prompts.
    scored_columns = batch.response_mask.any(0).nonzero()
    first = int(scored_columns[0]) if len(scored_columns) else width - 1
    logits = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=position_ids,
        use_cache=False,
        logits_to_keep=width - first + 1,
    ).logits[:, :-1]  # [B, T − first, V]: logits at positions first−1 … T−2 score tokens first … T−1
    logits = logits.float()
    targets = batch.input_ids[:, first:].unsqueeze(-1)
    next_token_logps = torch.gather(logits, -1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    scored = batch.response_mask[:, first:]
    per_token = torch.where(scored, next_token_logps, torch.zeros_like(next_token_logps))
    return torch.nn.functional.pad(per_token, (first, 0))


def sequence_logps(model: torch.nn.Module, batch: SequenceBatch, length_normalize: bool = False) -> Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) over response tokens, ``[B]``.

    With ``length_normalize`` the sum is divided by the number of response tokens |y|.
    """
    per_token = token_logps(model, batch)
    total = per_token.sum(-1)
    if length_normalize:
        total = total / batch.response_mask.sum(-1).clamp(min=1)
    return total


def policy_and_reference_logps(
    model: torch.nn.Module, batch: SequenceBatch, length_normalize: bool = False
) -> tuple[Tensor, Tensor]:
    """log πθ(y|x) (with gradients) and log πref(y|x) (no gradients, adapters disabled) in one call, each ``[B]``."""
    policy = sequence_logps(model, batch, length_normalize)
    with torch.no_grad(), reference_mode(model):
        reference = sequence_logps(model, batch, length_normalize)
    return policy, reference
