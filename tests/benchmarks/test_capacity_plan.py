"""The capacity plan's tiny-scale prediction against a tiny round measured on CPU.

Exact: the round's candidate pairs (the product's own pairing), the adapter's parameters, the bytes of each feature
worker's saved shard, of V and V⁻¹ in the selector's checkpoint, and of one greedy pick's messages. Time is only a
floor: the plan at this machine's measured matmul rate cannot beat the featurisation it predicts.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from actors.features import FeatureWorkerGroup
from actors.selector import Selector
from benchmarks.capacity_plan import Hardware, main, per_pick_bytes, plan, sizes
from system.config import load_config
from system.generation import candidate_pairs
from system.models.loading import load_policy
from system.types import Candidate
from tests.actors.conftest import ray_cluster, tiny_model_dir  # noqa: F401 - Ray and the tiny model for this module
from tests.conftest import REPO_ROOT


def matmul_flops() -> float:
    """FLOP/s of a float32 matmul in this process (best of five)."""
    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 512**3 / best


@pytest.mark.timeout(600)
def test_tiny_plan_matches_a_measured_selection_round(ray_cluster, tiny_model_dir, tmp_path):  # noqa: F811
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [  # ActiveDPO: the plan sizes gradient-feature shards
        f"model.path={tiny_model_dir}", "cluster.features.num_cpus=0.5", "cluster.selector.num_cpus=0.25",
        "selection.strategy=activedpo"])
    s = sizes(config)
    this_machine = Hardware(peak_flops=matmul_flops(), mfu=1.0)
    phases = {phase.name: phase for phase in plan(config, this_machine)}

    candidates = [Candidate(f"p{i}", f"Tell me about pet {i}.", f"Pet {i} answer {j}.")
                  for i in range(config.loop.prompts_per_round) for j in range(config.generation.responses_per_prompt)]
    pairs = candidate_pairs(candidates)
    assert len(pairs) == s.pairs == config.loop.prompts_per_round * math.comb(config.generation.responses_per_prompt, 2)

    model, tokenizer = load_policy(config.model, config.lora, is_trainable=True)
    adapter = sum(param.numel() for name, param in model.named_parameters() if "lora_" in name)
    assert adapter == s.lora_params
    assert phases["sync"].memory_per_actor == adapter * 4  # float32 tiny model

    features = FeatureWorkerGroup(config, tmp_path / "features")
    selector = Selector(config, tmp_path / "selector" / "design.pt")
    try:
        features.setup()
        selector.setup()
        start = time.perf_counter()
        features.featurize(pairs, [], 0, config.selection.strategy)
        featurize_s = time.perf_counter() - start
        result = selector.select(features, config.selection.budget, config.selection.strategy, 0)
    finally:
        selector.shutdown()
        features.shutdown()

    shards = [torch.load(tmp_path / "features" / f"features-{rank}.pt", weights_only=False)
              for rank in range(s.feature_workers)]
    shard_rows = math.ceil(s.pairs / s.feature_workers)  # the plan's round adds L earlier labels; this one has none
    assert max(shard["rows"].nbytes for shard in shards) == shard_rows * s.dim * 4
    design = torch.load(tmp_path / "selector" / "design.pt", weights_only=False)["design"]
    assert design["v"].nbytes + design["v_inv"].nbytes == phases["selection"].memory_per_actor == 2 * 256**2 * 8
    assert result.extra["bytes_per_pick"] == per_pick_bytes(s) == 2 * 256 * 12

    # The plan counts full-length sequences (s.seq_tokens each); these candidates are short, so the floor is scaled
    # by their actual token count: at peak, with no overhead, featurising cannot take less.
    first_round = config.model_copy(update={"loop": config.loop.model_copy(update={"rounds": 1})})  # L = 0, as here
    tokens = [len(tokenizer(f"{pair.prompt}{response}")["input_ids"]) for pair in pairs
              for response in (pair.response_1, pair.response_2)]
    floor = plan(first_round, this_machine)[1].seconds * (sum(tokens) / len(tokens)) / s.seq_tokens
    assert floor <= featurize_s


def test_the_script_prints_the_cluster_plan(capsys):
    main(["--config", str(REPO_ROOT / "configs/cluster-7b.yaml"), "--markdown"])
    out = capsys.readouterr().out
    assert "| features |" in out and "N = 3000 pairs" in out and "k = 8192" in out
