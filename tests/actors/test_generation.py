"""GenerationFleet (HF engine) on a real local Ray cluster: prompt order, retry after a kill, staleness."""

from __future__ import annotations

import pytest
import ray

from actors.generation import GenerationFleet, resolve_engine
from system.config import load_config
from system.errors import StaleVersionError
from system.types import PromptRecord


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return load_config(
        "configs/tiny.yaml",
        [f"model.path={tiny_model_dir}", "generation.engine=hf", "generation.num_actors=2",
         "generation.max_new_tokens=8", "cluster.generation.num_cpus=0.5"],
    )


@pytest.fixture(scope="module")
def fleet(ray_cluster, config):
    fleet = GenerationFleet(config)
    assert fleet.setup() == ["hf", "hf"]
    yield fleet
    fleet.shutdown()


PROMPTS = [PromptRecord(f"Tell me about the cat number {i}.", f"p{i}") for i in range(5)]


def test_resolve_engine_passes_explicit_choices():
    assert resolve_engine("hf") == "hf" and resolve_engine("vllm") == "vllm"
    assert resolve_engine("auto") in {"hf", "vllm"}


def test_prompt_order_is_kept_across_shards(fleet):
    candidates = fleet.generate(PROMPTS, n=2, policy_version=0)
    assert [c.prompt_id for c in candidates] == [p.prompt_id for p in PROMPTS for _ in range(2)]
    assert all(c.policy_version == 0 and c.prompt == PROMPTS[int(c.prompt_id[1:])].prompt for c in candidates)


def test_killed_actor_shard_reruns_elsewhere_with_the_same_result(fleet):
    clean = fleet.generate(PROMPTS, n=2, policy_version=0)
    ray.kill(fleet.group.actors[1], no_restart=False)  # Ray restarts it; its shard goes to actor 0 meanwhile
    assert fleet.generate(PROMPTS, n=2, policy_version=0) == clean
    assert fleet.generate(PROMPTS, n=2, policy_version=0) == clean  # the restarted actor serves again


def test_stale_version_is_refused(fleet):
    with pytest.raises(StaleVersionError):
        fleet.generate(PROMPTS[:2], n=2, policy_version=1)
