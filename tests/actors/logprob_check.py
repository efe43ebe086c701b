"""An independent check of a generator's reported log-probs: one unbatched forward of the same model."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from system.config import ModelConfig
from system.generation import encode_prompt
from system.types import Candidate


def assert_candidate_logprobs(
    model: torch.nn.Module, tokenizer, model_cfg: ModelConfig, candidates: Sequence[Candidate], abs_tol: float
) -> None:
    """Every candidate's ``logprobs`` equal log π(y_t | x, y_<t) of ``model`` on prompt ‖ its token ids."""
    for candidate in candidates:
        prompt_ids = encode_prompt(tokenizer, candidate.prompt, model_cfg)
        ids = torch.tensor([prompt_ids + list(candidate.token_ids)], device=next(model.parameters()).device)
        with torch.no_grad():
            logps = model(input_ids=ids).logits[0].float().log_softmax(-1)
        expected = [logps[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(candidate.token_ids)]
        assert candidate.logprobs == pytest.approx(expected, abs=abs_tol)
