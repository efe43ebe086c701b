"""system/generation.py: sampling params, the HF engine's tokens and log-probs, candidate pairing."""

from __future__ import annotations

import hashlib
import itertools
import json
import math

import pytest
import torch

from system.config import load_config
from system.generation import HFEngine, candidate_pairs, encode_prompt, sampling_params
from system.models.loading import load_policy
from system.types import Candidate, PromptRecord


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("tiny") / "model"
    return load_config("configs/tiny.yaml", [f"model.path={model_dir}", "generation.max_new_tokens=6",
                                             "generation.responses_per_prompt=3"])


@pytest.fixture(scope="module")
def engine(config):
    torch.manual_seed(0)
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    with torch.no_grad():  # non-zero LoRA B so the adapter changes the distribution
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return HFEngine(model, tokenizer, config.model, batch_size=2)


PROMPTS = [
    PromptRecord("How can I help my cat stay calm?", "p0"),
    PromptRecord([{"role": "user", "content": "What toys does a kitten like?"}], "p1"),
    PromptRecord("Tell me about the dog.", "p2"),
]


def test_sampling_params_follow_config(config):
    params = sampling_params(config.generation)
    assert (params.n, params.temperature, params.max_new_tokens) == (3, 1.0, 6)
    assert sampling_params(config.generation, n=5).n == 5


def test_logprobs_are_the_policy_log_probs_of_the_sampled_tokens(engine, config):
    params = sampling_params(config.generation, n=2)
    candidates = engine.generate(PROMPTS, params, policy_version=0)
    assert [c.prompt_id for c in candidates] == ["p0", "p0", "p1", "p1", "p2", "p2"]
    for candidate, record in zip(candidates, [p for p in PROMPTS for _ in range(2)], strict=True):
        assert len(candidate.token_ids) == len(candidate.logprobs) >= 1
        prompt_ids = encode_prompt(engine.tokenizer, record.prompt, config.model)
        ids = torch.tensor([prompt_ids + list(candidate.token_ids)])
        with torch.no_grad():  # one unpadded forward: an independent recomputation
            logps = engine.model(input_ids=ids).logits[0].log_softmax(-1)
        expected = [logps[len(prompt_ids) - 1 + t, token].item() for t, token in enumerate(candidate.token_ids)]
        assert candidate.logprobs == pytest.approx(expected, abs=1e-4)
        eos = engine.tokenizer.eos_token_id
        assert eos not in candidate.token_ids[:-1]
        assert len(candidate.token_ids) == 6 or candidate.token_ids[-1] == eos


def test_greedy_decoding_is_argmax_and_reproducible(engine, config):
    params = sampling_params(config.generation.model_copy(update={"temperature": 0.0}), n=1)
    first = engine.generate(PROMPTS[:1], params, 0)[0]
    assert engine.generate(PROMPTS[:1], params, 0)[0] == first
    assert all(math.isclose(lp, max_lp, abs_tol=1e-5) for lp, max_lp in zip(
        first.logprobs, _argmax_logps(engine, config, first), strict=True))


def _argmax_logps(engine, config, candidate):
    prompt_ids = encode_prompt(engine.tokenizer, candidate.prompt, config.model)
    ids = torch.tensor([prompt_ids + list(candidate.token_ids)])
    with torch.no_grad():
        logps = engine.model(input_ids=ids).logits[0].log_softmax(-1)
    return [logps[len(prompt_ids) - 1 + t].max().item() for t in range(len(candidate.token_ids))]


def test_candidate_pairs_are_all_pairs_per_prompt_with_stable_ids():
    candidates = [Candidate(f"p{p}", f"x{p}", f"y{p}{r}", policy_version=2) for p in (1, 0) for r in range(4)]
    candidates += [Candidate("p9", "x9", "only")]
    pairs = candidate_pairs(candidates)
    assert len(pairs) == 2 * math.comb(4, 2)  # a prompt with one response gives no pair
    expected = [(f"p{p}", f"y{p}{i}", f"y{p}{j}") for p in (1, 0) for i, j in itertools.combinations(range(4), 2)]
    assert [(q.prompt_id, q.response_1, q.response_2) for q in pairs] == expected
    assert len({q.pair_id for q in pairs}) == len(pairs)
    texts = json.dumps(["x1", "y10", "y11"], separators=(",", ":")).encode()
    assert pairs[0].pair_id == f"p1/v2/0-1/{hashlib.sha256(texts).hexdigest()[:12]}"
    assert pairs[0].policy_version == 2
    assert [q.pair_id for q in candidate_pairs(candidates)] == [q.pair_id for q in pairs]


def test_pairs_at_the_same_position_with_other_texts_get_other_ids():
    """Two runs whose round-r responses differ must not name their pairs alike: a shared label store would
    otherwise meet one run's id with the other's texts."""
    ours = candidate_pairs([Candidate("p", "x", "a"), Candidate("p", "x", "b")])
    theirs = candidate_pairs([Candidate("p", "x", "a"), Candidate("p", "x", "c")])
    swapped = candidate_pairs([Candidate("p", "x", "b"), Candidate("p", "x", "a")])
    assert ours[0].pair_id.startswith("p/v0/0-1/") and theirs[0].pair_id.startswith("p/v0/0-1/")
    assert len({ours[0].pair_id, theirs[0].pair_id, swapped[0].pair_id}) == 3
    assert ours[0].pair_id.rsplit("/", 1)[1] == ours[0].text_digest[:12]


def test_candidate_pairs_skip_blank_responses_and_keep_the_other_ids():
    candidates = [Candidate("p", "x", text) for text in ("a", " \n", "b", "")]
    pairs = candidate_pairs(candidates)
    assert [q.pair_id.rsplit("/", 1)[0] for q in pairs] == ["p/v0/0-2"]  # pairs with response 1 or 3 (blank) left out
    assert (pairs[0].response_1, pairs[0].response_2) == ("a", "b")
