"""The MiniLM judge is a real neural judge: checked against sentence-transformers and by what it prefers."""

from __future__ import annotations

import math

import pytest
import torch
from sentence_transformers import SentenceTransformer

from system.config import OracleConfig
from system.errors import OracleError
from system.oracles import build_oracle
from system.oracles.base import decide, pair_uniform, preference_probability
from system.oracles.reward_model import EmbeddingJudge, minilm_dir
from system.types import CandidatePair

TASK = "A polite answer that says please and thank you."
POLITE = "Thank you so much for asking! Please find the answer below, and thank you again."
UNRELATED = "The mitochondria is the powerhouse of the cell; ATP is made by oxidative phosphorylation."


@pytest.fixture(scope="module")
def judge() -> EmbeddingJudge:
    torch.set_num_threads(1)
    oracle = build_oracle(OracleConfig(task_description=TASK, temperature=0.05))
    assert isinstance(oracle, EmbeddingJudge)
    return oracle


def test_embeddings_match_sentence_transformers(judge: EmbeddingJudge) -> None:
    texts = [POLITE, UNRELATED, "short", TASK]
    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True)
    ours = judge.embed(texts)
    assert ours.shape == (4, 384)
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-5, rtol=0)


def test_matching_response_outranks_unrelated_one(judge: EmbeddingJudge) -> None:
    polite_reward, unrelated_reward = judge.rewards(["Q?", "Q?"], [POLITE, UNRELATED])
    assert polite_reward > unrelated_reward + 0.1
    pairs = [
        CandidatePair(pair_id="a", prompt_id="q", prompt="Q?", response_1=POLITE, response_2=UNRELATED),
        CandidatePair(pair_id="b", prompt_id="q", prompt="Q?", response_1=UNRELATED, response_2=POLITE),
    ]
    first, second = judge.label(pairs)
    assert (first.preferred, second.preferred) == (1, 2)
    expected = 1 / (1 + math.exp(-(polite_reward - unrelated_reward) / 0.05))
    assert first.prob_1 == pytest.approx(expected, abs=1e-5)
    assert second.prob_1 == pytest.approx(1 - expected, abs=1e-5)
    assert first.oracle == "reward_model" and first.model_version


def test_batched_rewards_equal_one_at_a_time(judge: EmbeddingJudge) -> None:
    texts = [POLITE, UNRELATED, "please", "a much longer response " * 10]
    batched = judge.rewards(["x"] * 4, texts)
    single = [judge.rewards(["x"], [text])[0] for text in texts]
    assert batched == pytest.approx(single, abs=1e-5)


def test_preference_probability_closed_form_and_extremes() -> None:
    assert preference_probability(2.0, 1.0, 1.0) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference_probability(0.0, 0.0, 3.0) == 0.5
    assert preference_probability(1e6, 0.0, 1.0) == 1.0
    assert preference_probability(0.0, 1e6, 1.0) == 0.0


def test_bradley_terry_sampling_is_seeded_per_pair_and_has_the_right_frequency() -> None:
    draws = [decide(0.7, "bradley_terry", seed=3, pair_id=f"p{i}") for i in range(4000)]
    assert draws == [decide(0.7, "bradley_terry", seed=3, pair_id=f"p{i}") for i in range(4000)]
    share_1 = draws.count(1) / len(draws)
    assert abs(share_1 - 0.7) < 4 * math.sqrt(0.7 * 0.3 / 4000)
    assert pair_uniform(3, "p0") != pair_uniform(4, "p0")
    assert decide(0.5, "argmax", 0, "x") == 1 and decide(0.49, "argmax", 0, "x") == 2


def test_model_path_without_config_names_it(tmp_path) -> None:
    with pytest.raises(OracleError, match="no config.json"):
        build_oracle(OracleConfig(model=str(tmp_path)))


def test_human_kind_has_no_machine_backend() -> None:
    with pytest.raises(OracleError, match="human"):
        build_oracle(OracleConfig(kind="human"))


def test_sequence_classification_reward_model_scores_prompt_response_pairs(tmp_path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from system.oracles.reward_model import ClassifierRewardModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=1)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    oracle = build_oracle(OracleConfig(model=str(tmp_path), temperature=0.5))
    assert isinstance(oracle, ClassifierRewardModel)
    prompts, responses = ["Q1?", "Q2 is longer?"], [POLITE, UNRELATED]
    with torch.no_grad():
        expected = [model(**tokenizer(prompt, response, return_tensors="pt")).logits[0, 0].item()
                    for prompt, response in zip(prompts, responses, strict=True)]
    assert oracle.rewards(prompts, responses) == pytest.approx(expected, abs=1e-5)
    (label,) = oracle.label([CandidatePair("c", "q", "Q1?", POLITE, UNRELATED)])
    reward_1, reward_2 = oracle.rewards(["Q1?", "Q1?"], [POLITE, UNRELATED])
    assert label.prob_1 == pytest.approx(preference_probability(reward_1, reward_2, 0.5), abs=1e-6)
