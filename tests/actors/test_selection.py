"""Distributed greedy (feature workers + selector actor) against single-process selection, with failures."""

from __future__ import annotations

import threading
import time

import pytest
import ray
import torch

from actors.features import FeatureWorkerGroup
from actors.selector import Selector
from system.config import load_config
from system.features import gradient_features
from system.models.loading import load_policy
from system.selection import DesignState, PoolInputs, select_pairs
from system.types import CandidatePair


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return load_config(
        "configs/tiny.yaml",
        [f"model.path={tiny_model_dir}", "features.num_workers=2", "features.projection_dim=32",
         "cluster.features.num_cpus=0.5", "cluster.selector.num_cpus=0.25", "selection.refactor_every=16"],
    )


@pytest.fixture(scope="module")
def workers(ray_cluster, config, tmp_path_factory):
    group = FeatureWorkerGroup(config, tmp_path_factory.mktemp("feature-state"))
    group.setup()
    yield group
    group.shutdown()


def _pool(num_pairs: int, dim: int, seed: int = 0) -> tuple[list[str], torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    phi = torch.randn(num_pairs, dim, generator=generator)
    phi[3] = 0.0  # a zero-norm pair is never picked
    return [f"pair-{i}" for i in range(num_pairs)], phi


def _single_process(config, pair_ids, phi, budget, strategy, rounds=1):
    state = DesignState(phi.shape[1], config.selection.reg, refactor_every=config.selection.refactor_every)
    return [select_pairs(pair_ids, PoolInputs(phi), budget, state, strategy, seed=config.selection.seed)
            for _ in range(rounds)]


@pytest.mark.parametrize("strategy", ["activedpo", "random"])
def test_sharded_selection_equals_single_process(workers, config, tmp_path, strategy):
    pair_ids, phi = _pool(301, 32)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    assert selector.setup() == 0
    expected = _single_process(config, pair_ids, phi, 40, strategy)[0]
    result = selector.select(workers, budget=40, strategy=strategy, round_index=0)
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9, abs=1e-12)
    assert result.skipped_zero_norm == 1 and "pair-3" not in result.pair_ids
    assert result.extra["logdet"] == pytest.approx(expected.extra["logdet"], rel=1e-9)
    if strategy == "activedpo":  # per pick: z (k float64) to each of 2 workers, one float32 row back from each
        assert result.extra["bytes_per_pick"] == 2 * 32 * 8 + 2 * 32 * 4  # O(W·k), whatever N is
    selector.shutdown()


@pytest.mark.slow  # waits for Ray to restart a worker that reloads the policy: ~40 s idle, minutes when loaded
def test_worker_killed_mid_round_is_restored_and_the_round_matches(workers, config, tmp_path):
    pair_ids, phi = _pool(3000, 32, seed=1)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    expected = _single_process(config, pair_ids, phi, 150, "activedpo")[0]
    killer = threading.Thread(target=lambda: (time.sleep(1.0), ray.kill(workers.workers[1], no_restart=False)))
    killer.start()
    result = selector.select(workers, budget=150, strategy="activedpo", round_index=0)
    killer.join()
    assert result.extra["worker_restarts"] >= 1
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9, abs=1e-12)
    selector.shutdown()


@pytest.mark.slow  # waits for Ray to restart the selector actor
def test_selector_restart_restores_the_design_state(workers, config, tmp_path):
    pair_ids, phi = _pool(200, 32, seed=2)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    first = selector.select(workers, budget=10, strategy="activedpo", round_index=0)
    before = selector.design_state()
    ray.kill(selector.actor, no_restart=False)
    second = selector.select(workers, budget=10, strategy="activedpo", round_index=1)  # waits for the restart
    expected = _single_process(config, pair_ids, phi, 10, "activedpo", rounds=2)
    assert (first.pair_ids, second.pair_ids) == (expected[0].pair_ids, expected[1].pair_ids)
    after = selector.design_state()
    assert after["round"] == 2 and after["selected_ids"] == list(first.pair_ids + second.pair_ids)
    assert before["round"] == 1
    selector.shutdown()


def test_featurized_shards_select_like_in_process_features(workers, config, tmp_path):
    pairs = [CandidatePair(f"q{i}", f"p{i // 3}", f"Tell me about cat {i // 3}.", f"A cat {i} sleeps.",
                           f"Thank you, cat {i} plays {'a lot' * (i % 3)}.") for i in range(14)]
    zero = workers.featurize(pairs, policy_version=0, strategy="activedpo")
    assert zero == 0
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    result = selector.select(workers, budget=5, strategy="activedpo", round_index=0)
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    phi = gradient_features(model, tokenizer, pairs, config)
    expected = _single_process(config, [p.pair_id for p in pairs], phi, 5, "activedpo")[0]
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-4)
    selector.shutdown()
