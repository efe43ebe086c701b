"""End to end: the active loop on a local Ray with the tiny config, read back through MLflow.

Every actor runs for real (generation fleet, two feature workers, selector, Serve oracle with the
MiniLM judge, the DeepSpeed trainer group). One Ray cluster is shared by the module; each run
starts and stops its own oracle app on a free port. The full strategy × loss matrix is ``slow``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from system.config import Config, flatten_config, load_config
from system.data import load_preferences, read_prompts
from system.labels import LabelStore
from system.loop import offline_pool
from system.oracles import build_oracle
from system.run_state import load_round_state
from system.training import prompt_key
from system.types import PreferencePair, pair_text_digest
from tests.conftest import REPO_ROOT, free_port
from tests.jobs.ray_metrics_export import wait_for_ray_metrics

ROUNDS = 2
BUDGET = 4


def small_config(tmp: Path, model_dir: Path, **overrides: object) -> Config:
    """configs/tiny.yaml cut down for CI: 4 prompts × 3 responses per round, 4 labels picked by ActiveDPO, 1 epoch."""
    settings = {
        "model.path": str(model_dir), "loop.run_dir": str(tmp / "run"), "loop.rounds": ROUNDS,
        "loop.prompts_per_round": 4, "loop.num_eval_prompts": 4, "generation.max_new_tokens": 8,
        "generation.responses_per_prompt": 3, "selection.strategy": "activedpo",
        "selection.budget": BUDGET, "train.epochs": 1, "train.batch_size": 4, "oracle.port": free_port(),
        "oracle.label_store_url": f"sqlite:///{tmp}/labels.db", "tracking.uri": f"sqlite:///{tmp}/mlflow.db",
        "loop.prompts_path": str(REPO_ROOT / "configs/data/tiny_prompts.jsonl"),
        "loop.eval_prompts_path": str(REPO_ROOT / "configs/data/tiny_eval_prompts.jsonl"),
        **overrides,
    }
    return load_config(REPO_ROOT / "configs/tiny.yaml", [f"{key}={value}" for key, value in settings.items()])


@pytest.fixture(scope="module")
def shared_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from system.models.tiny import build_tiny_model

    tiny = load_config(REPO_ROOT / "configs/tiny.yaml").model.tiny
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", tiny)


def run_loop(config: Config) -> Path:
    from jobs.active_loop import main

    assert main(config, resume=None) == 0
    return Path(config.loop.run_dir)


def check_rounds(run_dir: Path, config: Config) -> None:
    """Each round selected ``budget`` distinct pairs of its own candidates; labels agree with the judge."""
    judge = build_oracle(config.oracle)
    for index in range(1, ROUNDS + 1):
        round_dir = run_dir / f"round_{index:03d}"
        selection = json.loads((round_dir / "selection.json").read_text())
        candidates = {row["pair_id"] for row in _selected_rows(round_dir)}
        assert len(selection["pair_ids"]) == len(set(selection["pair_ids"])) == BUDGET
        assert set(selection["pair_ids"]) == candidates
        labelled = load_preferences(round_dir / "labels.jsonl")
        chosen = judge.rewards([p.prompt for p in labelled], [p.chosen for p in labelled])
        rejected = judge.rewards([p.prompt for p in labelled], [p.rejected for p in labelled])
        assert all(c >= r - 1e-6 for c, r in zip(chosen, rejected, strict=True))  # argmax oracle


def check_design_rebuilt(run_dir: Path, config: Config) -> None:
    """ActiveDPO paper, Prop. 1: the selector's V after round 2 = λI + Σ φφᵀ over every pair labelled in rounds 1 and 2,
    each φ recomputed here from scratch under the round-2 policy (round 1's adapter), not the φ it was picked with."""
    import torch

    from system.features import gradient_features
    from system.models.loading import load_policy
    from system.types import CandidatePair

    design = torch.load(run_dir / "round_002" / "selector_state.pt", weights_only=False)["design"]
    pairs = [CandidatePair(**row) for index in (1, 2) for row in _selected_rows(run_dir / f"round_{index:03d}")]
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=run_dir / "round_001" / "train" / "adapter",
                                   is_trainable=False)
    phi = gradient_features(model, tokenizer, pairs, config).double()
    expected = config.selection.reg * torch.eye(phi.shape[1], dtype=torch.float64) + phi.T @ phi
    torch.testing.assert_close(design["v"], expected, rtol=1e-4, atol=1e-5)


def check_in_process_picks(config: Config, run_dir: Path, tmp: Path) -> None:
    """The in-process parts (no Ray: ``system/local_parts.py``, the benchmark harness) given the same config
    generate the same candidates and select exactly the pairs the Ray path selected, round by round."""
    from jobs.loop_setup import load_prompt_sets
    from system.local_parts import local_parts
    from system.loop import ActiveLoop
    from system.run_state import RoundState

    local = small_config(tmp, Path(config.model.path), **{"tracking.enabled": False})
    local_dir = Path(local.loop.run_dir)
    local_dir.mkdir(parents=True)
    prompts, eval_prompts = load_prompt_sets(local)
    ActiveLoop(local, local_dir, local_parts(local), None, RoundState(), prompts, eval_prompts).run()
    for index in range(1, ROUNDS + 1):
        name = f"round_{index:03d}"
        ours, theirs = ([json.loads(line) for line in (d / name / "candidates.jsonl").read_text().splitlines()]
                        for d in (local_dir, run_dir))
        assert [{**row, "logprobs": None} for row in ours] == [{**row, "logprobs": None} for row in theirs], name
        # the same tokens; their log-probs to float32 rounding (an actor runs torch on fewer threads than this process)
        for row, other in zip(ours, theirs, strict=True):
            assert row["logprobs"] == pytest.approx(other["logprobs"], abs=1e-5), name
        picked = [json.loads((d / name / "selection.json").read_text())["pair_ids"] for d in (run_dir, local_dir)]
        assert picked[0] == picked[1], name


def _selected_rows(round_dir: Path) -> list[dict]:
    from system.data import read_rows

    return list(read_rows(round_dir / "selected_pairs.parquet"))


@pytest.fixture(scope="module")
def first_run(ray_cluster, shared_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path]:
    """The default strategy's run (ActiveDPO), its label store in the temporary folder, not in its run directory."""
    tmp = tmp_path_factory.mktemp("first_run")
    config = small_config(tmp, shared_model, **{"tracking.upload_design_state": True})
    return config, run_loop(config)


@pytest.mark.timeout(1800)
def test_loop_runs_and_mlflow_has_params_metrics_artifacts(first_run: tuple[Config, Path], tmp_path: Path) -> None:
    config, run_dir = first_run

    state = load_round_state(run_dir)
    assert state is not None and (state.round, state.phase, state.policy_version) == (ROUNDS, "evaluated", ROUNDS)
    assert len(state.labelled_pair_ids) == ROUNDS * BUDGET
    wait_for_ray_metrics({"ray_activealign_loop_phase_seconds", "ray_activealign_loop_oracle_latency_seconds"},
                         {"ray_activealign_loop_round": ROUNDS, "ray_activealign_loop_labels": ROUNDS * BUDGET})
    check_rounds(run_dir, config)
    check_design_rebuilt(run_dir, config)
    check_in_process_picks(config, run_dir, tmp_path / "in_process")

    client = MlflowClient(tracking_uri=config.tracking.uri)
    run = client.get_run(state.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == flatten_config(config)
    labels = client.get_metric_history(run.info.run_id, "labels")
    assert [(m.step, m.value) for m in labels] == [(0, 0.0), (1, BUDGET), (2, 2 * BUDGET)]
    for key in ("eval/reward", "eval/win_rate", "train/loss", "selection/score_mean", "time/training_s",
                "time/evaluation_s", "time/round_s", "generation/tokens_per_s"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert steps == ([0, 1, 2] if key.startswith("eval/") else [1, 2]), key
    rewards = client.get_metric_history(run.info.run_id, "eval/reference_reward")
    assert len({round(m.value, 5) for m in rewards}) == 1  # the reference policy never changes
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "round_002")}
    assert artifacts == {f"round_002/{name}" for name in ("labels.jsonl", "selected_pairs.parquet", "selection.json",
                                                          "metrics.json", "train_metrics.json", "adapter")}
    assert [a.path for a in client.list_artifacts(run.info.run_id, "design_state")] == [
        "design_state/design_state.tar.gz"]  # selector snapshot, feature shards and RNG states, once
    assert [a.path for a in client.list_artifacts(run.info.run_id, "report")] == [
        "report/report.html", "report/report.png", "report/summary.json"]
    assert "model/adapter_config.json" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}


def offered_pairs(run_dir: Path, index: int) -> dict[str, tuple]:
    """``{pair_id: (prompt, response_1, response_2)}`` of every candidate pair round ``index`` generated."""
    from system.data import read_rows
    from system.generation import candidate_pairs
    from system.types import Candidate

    candidates = [Candidate(**{**row, "token_ids": tuple(row["token_ids"]), "logprobs": tuple(row["logprobs"])})
                  for row in read_rows(run_dir / f"round_{index:03d}" / "candidates.jsonl")]
    return {pair.pair_id: (pair.prompt, pair.response_1, pair.response_2) for pair in candidate_pairs(candidates)}


@pytest.mark.timeout(1800)
def test_two_runs_on_one_label_store_train_only_on_verdicts_of_their_own_texts(
    first_run: tuple[Config, Path], shared_model: Path, tmp_path: Path
) -> None:
    """A second run (random selection, another generation seed, as in a sweep) on the first run's label store: the
    stored verdict behind every label either run trained on judged exactly the texts that run offered under that
    pair id, and agrees with the judge on them. The runs generate other texts at the same (prompt, policy version,
    response positions): the test checks that this happened, since a position-only pair id would then hand the
    second run the first run's verdict on other texts."""
    first_config, first_dir = first_run
    second_config = small_config(tmp_path, shared_model, **{
        "selection.strategy": "random", "generation.seed": 1,
        "oracle.label_store_url": first_config.oracle.label_store_url})
    second_dir = run_loop(second_config)
    check_rounds(second_dir, second_config)
    with LabelStore(first_config.oracle.label_store_url) as store:
        stored = {record.pair_id: record for record in store.labels()}
    positions: dict[str, set[tuple]] = {}
    for run_dir in (first_dir, second_dir):
        for index in range(1, ROUNDS + 1):
            offered = offered_pairs(run_dir, index)
            for pair in load_preferences(run_dir / f"round_{index:03d}" / "labels.jsonl"):
                pair_id = str(pair.pair_id)
                record = stored[pair_id]
                assert (record.prompt, record.response_1, record.response_2) == offered[pair_id]
                assert record.text_digest == pair_text_digest(*offered[pair_id])
                positions.setdefault(pair_id.rsplit("/", 1)[0], set()).add(offered[pair_id])
    assert any(len(texts) > 1 for texts in positions.values()), "no position was labelled with other texts per run"


MATRIX = [("random", "dpo"), ("activedpo", "dpo"), ("adpo", "dpo"), ("adpo_plus", "dpo"), ("apo", "dpo"),
          ("activedpo", "ipo"), ("adpo_plus", "mpo")]


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "loss"), MATRIX, ids=[f"{s}-{loss}" for s, loss in MATRIX])
def test_every_strategy_and_loss_runs_two_rounds(
    ray_cluster, shared_model: Path, tmp_path: Path, strategy: str, loss: str
) -> None:
    config = small_config(tmp_path, shared_model, **{"selection.strategy": strategy, "train.loss": loss})
    run_dir = run_loop(config)
    check_rounds(run_dir, config)
    metrics = json.loads((run_dir / "round_002" / "metrics.json").read_text())
    assert metrics["labels"] == 2 * BUDGET and "train/loss" in metrics
    if strategy == "apo":  # the pool is drawn once: round 2 picks from round 1's unlabelled candidates
        assert not (run_dir / "round_002" / "candidates.jsonl").exists()
        first = {row["pair_id"] for row in _selected_rows(run_dir / "round_001")}
        second = {row["pair_id"] for row in _selected_rows(run_dir / "round_002")}
        assert not first & second and all("/v0/" in pair_id for pair_id in second)
    if loss == "mpo":  # D_ref(x) drawn once, before round 1, for every training prompt
        samples = json.loads((run_dir / "mpo_reference_samples.json").read_text())
        prompts = {prompt_key(record.prompt) for record in read_prompts(config.loop.prompts_path)}
        assert set(samples) == prompts and {len(s) for s in samples.values()} == {config.train.mpo_ref_samples}


def refuse_policy_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every ``load_policy`` this process has imported fail (actors and Ray Train workers are other processes)."""
    from system.models import loading

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the driver loaded a policy")

    for module in list(sys.modules.values()):
        if vars(module).get("load_policy") is loading.load_policy:
            monkeypatch.setattr(module, "load_policy", refuse)


def driver_logit_errors(config: Config, adapter: Path, held_out: list[PreferencePair]) -> dict[str, float]:
    """Logit-error metrics computed in this process from a policy loaded here: ℓ̂ = β·Δ(log πθ − log πref),
    chosen − rejected, for every held-out pair with scores."""
    from system.evaluation import logit_error_metrics
    from system.models.loading import load_policy
    from system.models.logprobs import encode_sequences, policy_and_reference_logps

    scored = [p for p in held_out if p.score_chosen is not None and p.score_rejected is not None]
    model, tokenizer = load_policy(config.model, config.lora, adapter_path=adapter, is_trainable=False)
    batch = encode_sequences(tokenizer, [p.prompt for p in scored] * 2,
                             [p.chosen for p in scored] + [p.rejected for p in scored], config.model)
    with torch.no_grad():
        policy, reference = policy_and_reference_logps(model, batch, config.model.length_normalize)
    ratio = policy - reference
    predicted = (config.train.beta * (ratio[: len(scored)] - ratio[len(scored) :])).tolist()
    truth = [float(p.score_chosen) - float(p.score_rejected) for p in scored]  # type: ignore[arg-type]
    return {f"eval/{key}": value for key, value in logit_error_metrics(predicted, truth).items()}


@pytest.mark.slow
def test_offline_mode_selects_from_the_pool_and_reports_logit_error(
    ray_cluster, shared_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offline logit error comes from the feature workers' margins: equal to a computation in this process
    with the trained adapter, and the loop itself loads no policy here."""
    pool = REPO_ROOT / "configs/data/tiny_pool.jsonl"
    config = small_config(tmp_path, shared_model, **{
        "loop.mode": "offline", "loop.pool_path": str(pool), "oracle.kind": "replay", "oracle.dataset": str(pool),
        "selection.strategy": "adpo_plus"})
    refuse_policy_loads(monkeypatch)
    run_dir = run_loop(config)
    monkeypatch.undo()
    truth = {pair.pair_id: pair.chosen for pair in load_preferences(pool)}
    for index in range(1, ROUNDS + 1):
        labelled = load_preferences(run_dir / f"round_{index:03d}" / "labels.jsonl")
        assert len(labelled) == BUDGET and all(truth[p.pair_id] == p.chosen for p in labelled)
    metrics = json.loads((run_dir / "round_002" / "metrics.json").read_text())
    held_out = offline_pool(load_preferences(pool), config.loop.seed).held_out
    expected = driver_logit_errors(config, run_dir / "round_002" / "train" / "adapter", held_out)
    assert {key: metrics[key] for key in expected} == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert 0.0 <= metrics["eval/error_rate"] <= 1.0
    assert metrics["eval/max_logit_error"] >= metrics["eval/mean_logit_error"] >= 0.0
