"""``activealign evaluate`` on the base policy, ``activealign export`` of labels (SQLite and PostgreSQL stores) and
of the adapter, and ``activealign import`` of labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.export import main as export_main
from system.config import load_config
from system.data import load_preferences
from system.errors import DataError
from system.evaluation.local import evaluate_adapter
from system.generation import evaluation_params
from system.labels import LabelStore
from system.labels.formats import export_labels
from system.run_state import RoundState, save_round_state
from system.types import CandidatePair, Label
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


def test_export_labels_writes_the_stored_preferences(tmp_path: Path, store_url: str) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"oracle.label_store_url={store_url}"])
    pairs = [CandidatePair(f"p{i}", f"x{i}", f"prompt {i}", f"a{i}", f"b{i}") for i in range(2)]
    with LabelStore(store_url) as store:
        store.put([Label("p0", 1, 0.9, "reward_model"), Label("p1", 2, 0.2, "reward_model")], pairs, round=1)
    assert export_main(config, tmp_path / "prefs.jsonl", what="labels") == 0
    rows = load_preferences(tmp_path / "prefs.jsonl")
    assert sorted((row.pair_id, row.prompt, row.chosen, row.rejected) for row in rows) == [
        ("p0", "prompt 0", "a0", "b0"), ("p1", "prompt 1", "b1", "a1")]
    assert sorted(row.score_chosen for row in rows) == pytest.approx([0.8, 0.9])


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


def test_import_then_export_through_the_cli_keeps_every_annotator_s_answer(tmp_path: Path) -> None:
    """`activealign import` reads a Label Studio export into a run's store (twice: idempotent), and `export` writes
    the same answers back, each with its annotator."""
    source = tmp_path / "source.db"
    pair = CandidatePair("ls-1", "x", "Say hi", "hi!", "no.")
    with LabelStore(f"sqlite:///{source}") as store:
        store.put([Label("ls-1", 2, 0.0, "human", annotator="alice"), Label("ls-1", 1, 1.0, "human", annotator="bob")],
                  [pair], round=3)
        export_labels(store, tmp_path / "tasks.json", "label-studio", what="answers")
    run = ["--config", "configs/tiny.yaml", "--loop.run_dir", str(tmp_path / "run")]
    for expected in ("imported 2 new labels", "imported 0 new labels"):
        done = subprocess.run([sys.executable, "-m", "jobs.cli", "import", str(tmp_path / "tasks.json"),
                               "--format", "label-studio", *run], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0 and expected in done.stdout, done.stderr[-2000:]
    with LabelStore(f"sqlite:///{tmp_path / 'run' / 'labels.db'}") as store:
        assert sorted((r.pair_id, r.annotator, r.preferred, r.round) for r in store.labels()) == [
            ("ls-1", "alice", 2, 3), ("ls-1", "bob", 1, 3)]
    done = subprocess.run([sys.executable, "-m", "jobs.cli", "export", "--what", "answers", "--format", "argilla",
                           "--out", str(tmp_path / "answers.jsonl"), *run], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "exported 2 answers (argilla)" in done.stdout, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert sorted((r["metadata"]["annotator"], r["responses"]["preferred"][0]["value"]) for r in records) == [
        ("alice", "2"), ("bob", "1")]
