"""Distributed selection (feature workers + selector actor) against single-process selection and against V
recomputed from scratch, with failures, a synced adapter between rounds and a user's strategy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import ray
import torch

from actors.features import FeatureWorkerGroup
from actors.selector import Selector, SelectorActor
from actors.weights import broadcast_adapter
from system.config import Config, load_config
from system.errors import DataError, SelectionError
from system.features import gradient_features
from system.models.loading import load_policy
from system.selection import LocalPool, get_strategy, rank_rows, select_round
from system.selection.ensemble import draw_anchors, fit_heads
from system.selection.shards import blocked_rows
from system.types import CandidatePair
from tests.actors.adapters import perturbed_adapter
from tests.hostile import HostilePickle


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


def _text_pairs(count: int, tag: str = "q") -> list[CandidatePair]:
    return [CandidatePair(f"{tag}{i}", f"{tag}-p{i // 3}", f"Tell me about cat {i // 3}.", f"A cat {i} sleeps.",
                          f"Thank you, cat {i} plays {'a lot' * (i % 3)}.") for i in range(count)]


def _single_process(config, pair_ids, phi, budget, strategy, labelled=None, round_index=0):
    """One round in one process, as the in-process loop runs it: the strategy's rows of ``phi`` (and of
    ``labelled``, which start V = λI + Σ x xᵀ) in a one-shard pool, then ``select_round``."""
    rule = get_strategy(strategy)
    rows = rule.design_rows(phi.double(), None)
    labelled_rows = rows[:0] if labelled is None else rule.design_rows(labelled.double(), None)
    result, _ = select_round(LocalPool(rows, blocked_rows(rows)), pair_ids, labelled_rows, budget, rule, round_index,
                             config.selection.reg, config.selection.refactor_every, config.selection.seed)
    return result


def _design(config, rows):
    """λI + Σ x xᵀ in float64, from scratch."""
    rows = rows.double()
    return config.selection.reg * torch.eye(rows.shape[1], dtype=torch.float64) + rows.T @ rows


@pytest.mark.parametrize("strategy", ["activedpo", "random", "ensemble"])
def test_sharded_selection_equals_single_process(workers, config, tmp_path, strategy):
    pair_ids, phi = _pool(301, 32)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    assert selector.setup() == 0
    expected = _single_process(config, pair_ids, phi, 40, strategy)
    result = selector.select(workers, budget=40, strategy=strategy, round_index=0)
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9, abs=1e-12)
    assert result.skipped_zero_norm == 1 and "pair-3" not in result.pair_ids
    assert result.extra["logdet"] == pytest.approx(expected.extra["logdet"], rel=1e-9)
    if strategy == "activedpo":  # per pick: z (k float64) to each of 2 workers, one float32 row back from each
        assert result.extra["bytes_per_pick"] == 2 * 32 * 8 + 2 * 32 * 4  # O(W·k), whatever N is
    selector.shutdown()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_selection_on_workers_without_a_gpu_is_refused_naming_the_key(ray_cluster, config, tmp_path):
    group = FeatureWorkerGroup(config.model_copy(update={"selection": config.selection.model_copy(
        update={"device": "cuda"})}), tmp_path / "feature-state")
    with pytest.raises(SelectionError, match=r"selection\.device is 'cuda' but this process sees no CUDA device"):
        group.setup()
    group.shutdown()


@pytest.mark.drill  # waits for Ray to restart a worker that reloads the policy: ~40 s idle, minutes when loaded
def test_worker_killed_mid_round_is_restored_and_the_round_matches(workers, config, tmp_path):
    pair_ids, phi = _pool(3000, 32, seed=1)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    # 1,000 picks: shards rescore lazily, so a round of 150 could end before the kill lands
    expected = _single_process(config, pair_ids, phi, 1000, "activedpo")
    killer = threading.Thread(target=lambda: (time.sleep(0.5), ray.kill(workers.workers[1], no_restart=False)))
    killer.start()
    result = selector.select(workers, budget=1000, strategy="activedpo", round_index=0)
    killer.join()
    assert result.extra["worker_restarts"] >= 1
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9, abs=1e-12)
    selector.shutdown()


@pytest.mark.drill  # waits for Ray to restart the selector actor
def test_selector_restart_restores_its_record(workers, config, tmp_path):
    pair_ids, phi = _pool(200, 32, seed=2)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    first = selector.select(workers, budget=10, strategy="activedpo", round_index=0)
    before = selector.design_state()
    ray.kill(selector.actor, no_restart=False)
    picked = [pair_ids.index(pair_id) for pair_id in first.pair_ids]
    rest = [i for i in range(len(pair_ids)) if i not in picked]
    workers.set_features([pair_ids[i] for i in rest], phi[rest], labelled=phi[picked])
    second = selector.select(workers, budget=10, strategy="activedpo", round_index=1)  # waits for the restart
    expected = _single_process(config, [pair_ids[i] for i in rest], phi[rest], 10, "activedpo", labelled=phi[picked])
    assert first.pair_ids == _single_process(config, pair_ids, phi, 10, "activedpo").pair_ids
    assert second.pair_ids == expected.pair_ids
    after = selector.design_state()
    assert after["round"] == 2 and after["selected_ids"] == list(first.pair_ids + second.pair_ids)
    assert before["round"] == 1
    selector.shutdown()


def test_ensemble_heads_fit_on_the_selector_and_rank_on_the_workers_like_in_process(workers, config, tmp_path):
    """Round 1 with 40 labelled rows (presented chosen-first): the selector fits the 8 anchored heads, the workers
    rank their rows by the heads' disagreement; the picks equal the in-process round and the top 12 of
    Var_m P_m computed here from the heads fit independently of the selector."""
    pair_ids, phi = _pool(301, 32, seed=4)
    labelled = torch.randn(40, 32, generator=torch.Generator().manual_seed(5))
    workers.set_features(pair_ids, phi, labelled=labelled)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    result = selector.select(workers, budget=12, strategy="ensemble", round_index=1)
    selection = config.selection
    expected, _ = select_round(LocalPool(phi, blocked_rows(phi)), pair_ids, labelled, 12, "ensemble", 1,
                               selection.reg, selection.refactor_every, selection.seed)
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-9, abs=1e-15)
    heads = fit_heads(labelled, torch.ones(40, dtype=torch.bool), draw_anchors(8, 32, 1.0, selection.seed), 1.0)
    ranked = rank_rows(heads.keys(phi), blocked_rows(phi), 12)
    assert list(result.pair_ids) == [pair_ids[i] for i in ranked.tolist()]
    selector.shutdown()


def test_featurized_shards_select_like_in_process_features(workers, config, tmp_path):
    pairs = _text_pairs(14)
    zero = workers.featurize(pairs, [], policy_version=0, strategy="activedpo")
    assert zero == 0
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    result = selector.select(workers, budget=5, strategy="activedpo", round_index=0)
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    phi = gradient_features(model, tokenizer, pairs, config)
    expected = _single_process(config, [p.pair_id for p in pairs], phi, 5, "activedpo")
    assert result.pair_ids == expected.pair_ids
    assert result.scores == pytest.approx(expected.scores, rel=1e-4)
    selector.shutdown()


def test_random_draws_with_a_new_seed_every_round(workers, config, tmp_path):
    pair_ids, phi = _pool(301, 32)
    workers.set_features(pair_ids, phi)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    rounds = [selector.select(workers, budget=10, strategy="random", round_index=r) for r in (0, 1)]
    assert rounds[0].pair_ids != rounds[1].pair_ids
    for r, result in enumerate(rounds):
        assert result.pair_ids == _single_process(config, pair_ids, phi, 10, "random", round_index=r).pair_ids
    selector.shutdown()


def test_user_strategy_runs_on_the_workers_and_the_selector(workers, config, tmp_path):
    name = "tests.actors.user_strategy:half_greedy"
    pairs = _text_pairs(14)
    workers.featurize(pairs, [], policy_version=0, strategy=name)
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    result = selector.select(workers, budget=5, strategy=name, round_index=0)
    model, tokenizer = load_policy(config.model, config.lora, is_trainable=False)
    phi = gradient_features(model, tokenizer, pairs, config).double()
    pair_ids = [pair.pair_id for pair in pairs]
    assert result.strategy == "half_greedy"
    assert result.pair_ids == _single_process(config, pair_ids, phi, 5, name).pair_ids
    picked = phi[[pair_ids.index(pair_id) for pair_id in result.pair_ids]]
    torch.testing.assert_close(selector.design_state()["design"]["v"], _design(config, 0.5 * picked),
                               rtol=1e-4, atol=1e-5)  # the workers ran the user's row transform
    selector.shutdown()


def test_round_two_rebuilds_v_from_labelled_pairs_under_the_synced_adapter(ray_cluster, config, tmp_path):
    """ActiveDPO paper, Prop. 1 (docs/method.md, "Across rounds"): after round 2, V = λI + Σ φφᵀ over the round-1 and
    round-2 picks, every φ under the round-2 policy (version 1) — recomputed here from scratch — not the φ round 1
    picked with."""
    group = FeatureWorkerGroup(config, tmp_path / "state")  # its own workers: they move to version 1
    group.setup()
    selector = Selector(config, tmp_path / "selector.pt")
    selector.setup()
    first_pool, second_pool = _text_pairs(12, "a"), _text_pairs(12, "b")
    group.featurize(first_pool, [], policy_version=0, strategy="activedpo")
    first = selector.select(group, budget=4, strategy="activedpo", round_index=0)
    adapter = perturbed_adapter(config, tmp_path / "adapter", seed=1)
    broadcast_adapter(adapter, 1, [group])
    labelled = [pair for pair_id in first.pair_ids for pair in first_pool if pair.pair_id == pair_id]
    group.featurize(second_pool, labelled, policy_version=1, strategy="activedpo")
    second = selector.select(group, budget=4, strategy="activedpo", round_index=1)
    v = selector.design_state()["design"]["v"]
    group.shutdown()
    selector.shutdown()

    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    by_id = {pair.pair_id: pair for pair in second_pool}
    picked = labelled + [by_id[pair_id] for pair_id in second.pair_ids]
    torch.testing.assert_close(v, _design(config, gradient_features(model, tokenizer, picked, config)),
                               rtol=1e-4, atol=1e-5)
    old_model, _ = load_policy(config.model, config.lora, is_trainable=False)
    frozen = torch.cat([gradient_features(old_model, tokenizer, labelled, config),
                        gradient_features(model, tokenizer, picked[len(labelled):], config)])
    assert not torch.allclose(v, _design(config, frozen), rtol=1e-3, atol=1e-3)  # picked-time features differ
    phi_second = gradient_features(model, tokenizer, second_pool, config)
    expected = _single_process(config, list(by_id), phi_second, 4, "activedpo",
                               labelled=gradient_features(model, tokenizer, labelled, config), round_index=1)
    assert second.pair_ids == expected.pair_ids


def test_selector_restart_refuses_a_hostile_checkpoint(tmp_path: Path) -> None:
    marker, path = tmp_path / "marker", tmp_path / "selector_state.pt"
    torch.save({"design": HostilePickle(marker), "round": 1, "selected_ids": ["a"]}, path)
    with pytest.raises(DataError, match="selector_state.pt: not a tensor state file"):
        SelectorActor(0, Config(), str(path)).setup()
    assert not marker.exists()
