"""Weight sync: after broadcast_adapter, generators and feature workers score with exactly the trained weights."""

from __future__ import annotations

import pytest
import ray
import torch

from actors.features import FeatureWorker, FeatureWorkerGroup
from actors.generation import GenerationFleet
from actors.weights import broadcast_adapter, pack_adapter, unpack_adapter
from system.config import load_config
from system.errors import StaleVersionError
from system.features import implicit_reward_margins
from system.models.loading import load_policy
from system.types import CandidatePair, PromptRecord
from tests.actors.adapters import perturbed_adapter
from tests.actors.logprob_check import assert_candidate_logprobs


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return load_config(
        "configs/tiny.yaml",
        [f"model.path={tiny_model_dir}", "generation.engine=hf", "generation.num_actors=1",
         "generation.max_new_tokens=6", "features.num_workers=1", "cluster.generation.num_cpus=0.5",
         "cluster.features.num_cpus=0.5"],
    )


def test_pack_unpack_round_trip(config, tmp_path):
    adapter = perturbed_adapter(config, tmp_path / "adapter", seed=3)
    payload = pack_adapter(adapter, version=4)
    restored = unpack_adapter(payload, tmp_path / "copy")
    assert sorted(p.name for p in restored.iterdir()) == sorted(p.name for p in adapter.iterdir())
    assert all((restored / p.name).read_bytes() == p.read_bytes() for p in adapter.iterdir())


def test_a_restored_feature_worker_refuses_to_score_rows_older_than_the_version_it_serves(config, tmp_path):
    """A worker killed between an adapter sync and its next featurize comes back from its shard file with the rows
    (and adapter) of the older version; brought to the version its group serves, it refuses to score those rows
    until it has featurized again. In-process: the same class Ray runs as an actor."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    rows = torch.arange(1.0, 9.0).reshape(2, 4)
    first = FeatureWorker(0, config, str(state_dir))
    first.setup()
    first.set_features(["a", "b"], rows)  # version 0, written to the shard file
    restarted = FeatureWorker(0, config, str(state_dir))
    assert restarted.setup() == 0 and torch.equal(restarted.rows, rows)
    adapter = perturbed_adapter(config, tmp_path / "adapter", seed=1)
    restarted.load_adapter(adapter, 1)
    v_inv = torch.eye(4, dtype=torch.float64)
    for call in (lambda: restarted.begin_round(v_inv, 0), restarted.shard_info, restarted.labelled_rows):
        with pytest.raises(StaleVersionError, match="holds rows of policy version 0 but serves 1"):
            call()
    restarted.set_features(["a", "b"], 2 * rows)  # what its featurize at version 1 ends with
    proposal = restarted.begin_round(v_inv, 0)
    assert proposal is not None and proposal[0] == 1  # the larger row, scored under the new rows:
    assert proposal[1] == pytest.approx(4 * float((rows[1] ** 2).sum()))  # ‖2x‖² under V⁻¹ = I
    assert FeatureWorker(0, config, str(state_dir)).setup() == 1  # the file now names version 1 and its adapter


def test_generators_and_feature_workers_use_exactly_the_synced_weights(ray_cluster, config, tmp_path):
    fleet, features = GenerationFleet(config), FeatureWorkerGroup(config, tmp_path / "state")
    fleet.setup()
    features.setup()
    adapter = perturbed_adapter(config, tmp_path / "adapter", seed=1)
    size = broadcast_adapter(adapter, 1, [fleet, features])
    assert size > 0
    trained, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)

    prompts = [PromptRecord("Tell me about the cat.", "p0"), PromptRecord("How do I play with my cat?", "p1")]
    candidates = fleet.generate(prompts, n=2, policy_version=1)
    assert_candidate_logprobs(trained, tokenizer, config.model, candidates, abs_tol=1e-5)

    pairs = [CandidatePair(f"q{i}", "p0", "Tell me about the cat.", f"A cat {i} naps.", "Please, thank you.")
             for i in range(3)]
    margins = features.reward_margins(pairs, policy_version=1)
    expected_margins = implicit_reward_margins(trained, tokenizer, pairs, config)
    assert margins.tolist() == pytest.approx(expected_margins.tolist(), abs=1e-5)
    assert float(expected_margins.abs().max()) > 1e-3  # the adapter is not the reference policy

    with pytest.raises(StaleVersionError):
        features.reward_margins(pairs, policy_version=0)
    with pytest.raises(StaleVersionError):  # an older version arriving late is refused
        fleet.load_adapter(ray.put(pack_adapter(adapter, 0)), 0)
    fleet.shutdown()
    features.shutdown()
