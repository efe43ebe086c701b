"""Sequence log-probs: response tokens only, identical under left/right padding and unpadded, truncation rules."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

from system.config import LoraConfig, ModelConfig
from system.errors import DataError
from system.models.loading import reference_mode
from system.models.logprobs import encode_sequences, policy_and_reference_logps, sequence_logps, token_logps
from system.types import Text
from tests.system.models.conftest import perturbed_lora_policy

PROMPTS: list[Text] = [
    "Tell me about a kitten.",
    "How can I help the old cat next door stay calm at night when it is noisy?",
    [{"role": "user", "content": "What should I feed my cat?"}],
]
RESPONSES: list[Text] = [
    " It sleeps.",
    " Talk softly, move slowly and let the cat come to you.",
    [{"role": "assistant", "content": "Good food twice a day."}],
]


@pytest.fixture(scope="module")
def perturbed_policy(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    return perturbed_lora_policy(model_cfg, lora_cfg, seed=1)


def _unpadded_logp(model: torch.nn.Module, ids: torch.Tensor, response_start: int) -> float:
    """Σ_t≥start log softmax(logits[t-1])[ids[t]] on one unpadded row: the independent reference value."""
    with torch.no_grad():
        logits = model(input_ids=ids[None]).logits[0].double()
    log_probs = torch.log_softmax(logits, -1)
    return float(sum(log_probs[t - 1, ids[t]] for t in range(response_start, len(ids))))


def test_left_and_right_padding_equal_unpadded(perturbed_policy, model_cfg: ModelConfig) -> None:
    model, tokenizer = perturbed_policy
    right = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg, padding_side="right")
    left = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg, padding_side="left")
    assert right.attention_mask.sum(-1).unique().numel() == len(PROMPTS)  # rows really differ in length
    expected = []
    for i in range(len(PROMPTS)):
        real = right.attention_mask[i].bool()
        ids = right.input_ids[i][real]
        expected.append(_unpadded_logp(model, ids, int(right.response_mask[i][real].nonzero()[0])))
    with torch.no_grad():
        from_right = sequence_logps(model, right)
        from_left = sequence_logps(model, left)
    assert torch.allclose(from_right.double(), torch.tensor(expected, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(from_left, from_right, atol=1e-5)


def test_response_mask_marks_exactly_the_response(perturbed_policy, model_cfg: ModelConfig) -> None:
    _, tokenizer = perturbed_policy
    for side in ("left", "right"):
        batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg, padding_side=side)
        responses = [tokenizer.decode(batch.input_ids[i][batch.response_mask[i]]) for i in range(len(batch))]
        assert responses == [" It sleeps.</s>", " Talk softly, move slowly and let the cat come to you.</s>",
                             "Good food twice a day.</s>"]
        assert not (batch.response_mask & ~batch.attention_mask.bool()).any()


def test_token_logps_zero_outside_response_and_length_normalisation(perturbed_policy, model_cfg: ModelConfig) -> None:
    model, tokenizer = perturbed_policy
    batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg, padding_side="left")
    with torch.no_grad():
        per_token = token_logps(model, batch)
        assert per_token.shape == batch.input_ids.shape
        assert (per_token[~batch.response_mask] == 0).all() and (per_token[batch.response_mask] < 0).all()
        normalised = sequence_logps(model, batch, length_normalize=True)
    assert torch.allclose(normalised, per_token.sum(-1) / batch.response_mask.sum(-1))


def test_gradients_finite_under_left_padding(perturbed_policy, model_cfg: ModelConfig) -> None:
    model, tokenizer = perturbed_policy
    batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg, padding_side="left")
    model.zero_grad()
    sequence_logps(model, batch).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
    model.zero_grad()


def test_policy_and_reference_in_one_call(perturbed_policy, model_cfg: ModelConfig) -> None:
    model, tokenizer = perturbed_policy
    batch = encode_sequences(tokenizer, PROMPTS, RESPONSES, model_cfg)
    policy, reference = policy_and_reference_logps(model, batch)
    assert policy.requires_grad and not reference.requires_grad
    base = AutoModelForCausalLM.from_pretrained(model_cfg.path)
    with torch.no_grad():
        assert torch.allclose(reference, sequence_logps(base, batch), atol=1e-5)
        assert torch.allclose(policy, sequence_logps(model, batch))
        with reference_mode(model):
            assert torch.allclose(reference, sequence_logps(model, batch))


def test_long_prompt_truncated_left_keeps_the_tail(perturbed_policy, model_cfg: ModelConfig) -> None:
    _, tokenizer = perturbed_policy
    cfg = model_cfg.model_copy(update={"max_prompt_length": 6, "max_response_length": 3})
    batch = encode_sequences(tokenizer, [PROMPTS[1]], [RESPONSES[1]], cfg)
    full_prompt = tokenizer(PROMPTS[1])["input_ids"]
    response = tokenizer(RESPONSES[1], add_special_tokens=False)["input_ids"]
    assert batch.input_ids[0].tolist() == full_prompt[-6:] + response[:3]
    assert batch.response_mask[0].tolist() == [False] * 6 + [True] * 3


def test_long_prompt_error_names_the_row(perturbed_policy, model_cfg: ModelConfig) -> None:
    _, tokenizer = perturbed_policy
    cfg = model_cfg.model_copy(update={"max_prompt_length": 12, "prompt_truncation": "error"})
    with pytest.raises(DataError, match=r"row pair-7: prompt has \d+ tokens, more than model.max_prompt_length=12"):
        encode_sequences(tokenizer, PROMPTS[:2], RESPONSES[:2], cfg, row_names=["pair-3", "pair-7"])


def test_mismatched_lengths_rejected(perturbed_policy, model_cfg: ModelConfig) -> None:
    _, tokenizer = perturbed_policy
    with pytest.raises(DataError, match="2 prompts but 1 responses"):
        encode_sequences(tokenizer, PROMPTS[:2], RESPONSES[:1], model_cfg)
