"""``activealign evaluate`` on the base policy and ``activealign export --what adapter``."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.export import main as export_main
from system.config import load_config
from system.errors import DataError
from system.evaluation.local import evaluate_adapter
from system.generation import evaluation_params
from system.run_state import RoundState, save_round_state
from tests.conftest import REPO_ROOT


def test_base_policy_ties_with_the_reference(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"model.path={tmp_path}/model", "loop.num_eval_prompts=3",
                                                           "generation.max_new_tokens=6"])
    metrics = evaluate_adapter(config).metrics()
    # fresh LoRA adapters start at B = 0, so πθ = πref and every greedy response is the reference's
    assert metrics["eval/reward"] == pytest.approx(metrics["eval/reference_reward"], abs=1e-6)
    assert metrics["eval/win_rate"] == 0.5


def test_sampled_evaluation_scores_every_sample_and_is_seeded(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"model.path={tmp_path}/model", "loop.num_eval_prompts=2",
                                                           "loop.eval_samples_per_prompt=3",
                                                           "generation.max_new_tokens=8"])
    evaluation = evaluate_adapter(config)
    assert len(evaluation.policy_rewards) == len(evaluation.reference_rewards) == 6
    # πθ = πref and the same sampling seed: the policy's samples are the reference's, sample for sample
    assert evaluation.policy_rewards == pytest.approx(evaluation.reference_rewards, abs=1e-6)
    params = evaluation_params(config.generation, 3)
    assert (params.n, params.temperature, params.greedy) == (3, config.generation.temperature, False)
    assert evaluation_params(config.generation, 0).greedy


def test_export_adapter_copies_the_latest_adapter(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"loop.run_dir={tmp_path}/run"])
    with pytest.raises(DataError, match="no trained adapter yet"):
        export_main(config, tmp_path / "out", what="adapter")
    adapter = tmp_path / "run" / "round_001" / "train" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    save_round_state(tmp_path / "run", RoundState(round=1, phase="trained", policy_version=1,
                                                  adapter_path=str(adapter)))
    assert export_main(config, tmp_path / "out", what="adapter") == 0
    assert (tmp_path / "out" / "adapter_config.json").read_text() == '{"r": 8}'
    with pytest.raises(DataError, match="--what 'weights'"):
        export_main(config, tmp_path / "out2", what="weights")
