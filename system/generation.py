"""Sampling candidate responses and pairing them: the engine-independent part of generation.

The generation fleet (``actors/generation.py``) runs either vLLM or the Hugging Face engine
here; both return :class:`~system.types.Candidate` records with the sampled token ids and their
log-probabilities under the *unmodified* policy distribution, log softmax of the raw logits
(vLLM's ``raw_logprobs``), not of the temperature/top-p–processed one.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from system.config import GenerationConfig, ModelConfig
from system.models.logprobs import fit_prompt, prompt_token_ids
from system.types import Candidate, CandidatePair, PromptRecord, Text, pair_text_digest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """How to sample: ``n`` responses per prompt; ``temperature == 0`` means greedy decoding."""

    n: int
    temperature: float
    top_p: float
    max_new_tokens: int
    seed: int

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def sampling_params(cfg: GenerationConfig, n: int | None = None) -> SamplingParams:
    """Sampling parameters from the ``generation`` config section (``n`` overrides ``responses_per_prompt``)."""
    return SamplingParams(
        n=cfg.responses_per_prompt if n is None else n,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed,
    )


def evaluation_params(cfg: GenerationConfig, samples_per_prompt: int) -> SamplingParams:
    """Decoding for evaluation: greedy when ``samples_per_prompt`` is 0, else that many seeded samples
    at the generation temperature."""
    if samples_per_prompt == 0:
        return SamplingParams(n=1, temperature=0.0, top_p=1.0, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    return sampling_params(cfg, samples_per_prompt)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: Text, model_cfg: ModelConfig, row: str = "0"
) -> list[int]:
    """The prompt token ids the policy continues, exactly as training encodes them
    (:func:`system.models.logprobs.encode_sequences`: chat template with the assistant turn opened for
    conversations, the tokenizer's special tokens for plain text, ``model.prompt_truncation``).

    Raises:
        DataError: naming ``row``, when the prompt is too long and ``model.prompt_truncation`` is ``error``.
    """
    return fit_prompt(prompt_token_ids(tokenizer, prompt)[0], model_cfg, row)


def _length_to_eos(token_ids: list[int], eos_ids: set[int]) -> int:
    """Length of a generated row up to and including its first EOS (what follows is padding)."""
    for position, token in enumerate(token_ids):
        if token in eos_ids:
            return position + 1
    return len(token_ids)


class HFEngine:
    """Batched ``model.generate`` over prompts: the engine that runs everywhere transformers runs.

    Args:
        model: causal LM (a peft model for LoRA), in eval mode.
        tokenizer: its tokenizer; prompts are left-padded for batched decoding.
        model_cfg: prompt length limit and truncation rule.
        batch_size: prompts per ``generate`` call (each expands to ``n`` sequences).
    """

    def __init__(
        self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, model_cfg: ModelConfig, batch_size: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.model_cfg = model_cfg
        self.batch_size = batch_size

    @torch.no_grad()
    def generate(self, prompts: Sequence[PromptRecord], params: SamplingParams, policy_version: int) -> list[Candidate]:
        """``params.n`` candidates per prompt, prompt by prompt in input order.

        The RNG is seeded with ``params.seed + policy_version`` once per call, so a call is
        reproducible for the same prompts and batch size.
        """
        torch.manual_seed(params.seed + policy_version)
        candidates: list[Candidate] = []
        for start in range(0, len(prompts), self.batch_size):
            candidates.extend(self._generate_batch(prompts[start : start + self.batch_size], params, policy_version))
        return candidates

    def _generate_batch(
        self, prompts: Sequence[PromptRecord], params: SamplingParams, policy_version: int
    ) -> list[Candidate]:
        tokenizer = self.tokenizer
        prompt_ids = [encode_prompt(tokenizer, record.prompt, self.model_cfg, record.prompt_id) for record in prompts]
        width = max(map(len, prompt_ids))
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in prompt_ids])  # [B, T_prompt]
        attention_mask = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in prompt_ids])
        encoded = {"input_ids": input_ids.to(self.model.device), "attention_mask": attention_mask.to(self.model.device)}
        sampling = {"do_sample": False} if params.greedy else {
            "do_sample": True, "temperature": params.temperature, "top_p": params.top_p, "top_k": 0,
        }
        output = self.model.generate(  # type: ignore[operator]
            **encoded,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=pad_id,
            **sampling,
        )
        generated = output.sequences[:, width:]  # [B*n, T_new]
        raw_logps = torch.stack(output.logits, dim=1).float().log_softmax(-1)  # [B*n, T_new, V]
        token_logps = raw_logps.gather(-1, generated.unsqueeze(-1)).squeeze(-1)  # [B*n, T_new]
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        candidates = []
        for row in range(generated.shape[0]):
            record = prompts[row // params.n]
            ids = generated[row].tolist()
            length = _length_to_eos(ids, eos_ids)
            candidates.append(
                Candidate(
                    prompt_id=record.prompt_id,
                    prompt=record.prompt,
                    response=str(tokenizer.decode(ids[:length], skip_special_tokens=True)),
                    token_ids=tuple(ids[:length]),
                    logprobs=tuple(token_logps[row, :length].tolist()),
                    policy_version=policy_version,
                )
            )
        return candidates


PAIR_ID_DIGEST_CHARS = 12
"""Hex characters of the text digest in a generated pair id (48 bits: ids of one prompt and position collide
with chance 2⁻⁴⁸; the store compares full digests anyway)."""


def candidate_pairs(candidates: Sequence[Candidate]) -> list[CandidatePair]:
    """All C(m, 2) response pairs per prompt, prompts in first-seen order, pairs (i, j) with i < j, except
    pairs with a blank response (an immediate end of sequence): such a pair cannot be written as preference
    data (every reader refuses a blank ``chosen`` or ``rejected``), so it is never offered for labelling.

    The pair id ``{prompt_id}/v{policy_version}/{i}-{j}/{digest}`` is stable: the same candidates always
    give the same ids, and a prompt revisited in a later round (new policy version) gets new ones. ``digest``
    is the first :data:`PAIR_ID_DIGEST_CHARS` hex characters of the pair's
    :func:`~system.types.pair_text_digest`, so two runs (other strategies, seeds or policies) whose pairs share
    a position but not their texts get different ids, and a label store shared by the runs hands neither the
    other's verdicts (the store also refuses a known id with other texts).
    """
    by_prompt: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        by_prompt.setdefault(candidate.prompt_id, []).append(candidate)
    pairs = []
    for prompt_id, group in by_prompt.items():
        for (i, first), (j, second) in itertools.combinations(enumerate(group), 2):
            if not (first.response.strip() and second.response.strip()):
                continue
            digest = pair_text_digest(first.prompt, first.response, second.response)[:PAIR_ID_DIGEST_CHARS]
            pairs.append(
                CandidatePair(
                    pair_id=f"{prompt_id}/v{first.policy_version}/{i}-{j}/{digest}",
                    prompt_id=prompt_id,
                    prompt=first.prompt,
                    response_1=first.response,
                    response_2=second.response,
                    policy_version=first.policy_version,
                )
            )
    return pairs
