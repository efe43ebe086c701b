"""The MLflow tracker writes a real sqlite store; everything is read back with MlflowClient."""

from __future__ import annotations

import json
import secrets
import tarfile
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from mlflow import MlflowClient

from system.config import REDACTED, Config, TrackingConfig, flatten_config, load_config
from system.data import write_preferences, write_rows
from system.generation import candidate_pairs
from system.loop import labelled_pairs
from system.run_state import RoundState, round_dir, save_round_state
from system.selection import DesignState
from system.tracking import Tracker
from system.types import Candidate, Label, SelectionResult
from tests.conftest import REPO_ROOT

MB = 1_000_000


def test_params_metrics_artifacts_and_reopen(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = TrackingConfig(uri=uri, experiment="unit")
    config = load_config(None, ["train.lr=0.003"])
    tracker = Tracker.open(cfg, run_name="loop")
    tracker.log_config(config)
    tracker.log_metrics({"eval/reward": 0.25, "labels": 8, "bad": float("nan")}, step=1)
    (tmp_path / "pairs.jsonl").write_text("{}\n")
    tracker.log_artifact(tmp_path / "pairs.jsonl", "round_001")

    reopened = Tracker.open(cfg, run_name="ignored", run_id=tracker.run_id)
    reopened.log_config(load_config(None, ["train.lr=0.003"]))
    reopened.log_metrics({"eval/reward": 0.5}, step=2)
    reopened.finish()

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == flatten_config(config)
    assert run.data.params["train.lr"] == "0.003"
    history = client.get_metric_history(tracker.run_id, "eval/reward")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.5)]
    assert "bad" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(tracker.run_id, "round_001")] == ["round_001/pairs.jsonl"]
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert (tmp_path / "mlartifacts").is_dir()


def test_the_oracle_token_never_becomes_an_mlflow_param(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = secrets.token_urlsafe(24)
    monkeypatch.setenv("ACTIVEALIGN_API_TOKEN", token)
    config = load_config(None, [f"cluster.runtime_env.env_vars.ACTIVEALIGN_API_TOKEN={token}",
                                f"oracle.label_store_url=postgresql+psycopg://labeller:{token}@db/labels",
                                "cluster.runtime_env.env_vars.HF_HOME=/cache", "train.lr=0.003"])
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="secrets")
    tracker = Tracker.open(cfg, run_name="loop")

    tracker.log_config(config)

    params = MlflowClient(tracking_uri=cfg.uri).get_run(tracker.run_id).data.params
    assert not [item for item in params.items() if token in item[0] or token in item[1]]
    assert params["cluster.runtime_env.env_vars.ACTIVEALIGN_API_TOKEN"] == REDACTED
    assert params["oracle.label_store_url"] == REDACTED
    assert params["cluster.runtime_env.env_vars.HF_HOME"] == "/cache" and params["train.lr"] == "0.003"
    assert params["oracle.token_env"] == "ACTIVEALIGN_API_TOKEN"


def _uploaded_bytes(client: MlflowClient, run_id: str, artifact_path: str) -> dict[str, int]:
    """Size of every file under ``artifact_path`` in the run's local artifact store, read from disk."""
    root = Path(urlparse(client.get_run(run_id).info.artifact_uri).path)
    return {str(path.relative_to(root)): path.stat().st_size for path in (root / artifact_path).rglob("*")
            if path.is_file()}


def _write_round(run_dir: Path, config: Config, dim: int) -> Path:
    """Round 1 of ``config``'s shape, each file written the way :class:`~system.loop.ActiveLoop` writes it:
    candidates with per-token log-probs, selection, labels, metrics, the selector snapshot (V, V⁻¹ float64)
    and a trainer checkpoint directory; ``state.json`` points at the snapshot."""
    out = round_dir(run_dir, 1)
    out.mkdir(parents=True)
    tokens = config.generation.max_new_tokens
    candidates = [
        Candidate(f"p{p}", f"prompt {p}", "word " * tokens, tuple(range(tokens)), tuple([-1.25] * tokens))
        for p in range(config.loop.prompts_per_round) for _ in range(config.generation.responses_per_prompt)
    ]
    write_rows(out / "candidates.jsonl", [asdict(c) for c in candidates])
    chosen = candidate_pairs(candidates)[: config.selection.budget]
    result = SelectionResult(tuple(p.pair_id for p in chosen), tuple([1.0] * len(chosen)), "activedpo", 1)
    (out / "selection.json").write_text(json.dumps(asdict(result)))
    write_preferences(out / "labels.jsonl", labelled_pairs(chosen, [Label(p.pair_id, 1, 0.9, "rm") for p in chosen]))
    write_rows(out / "selected_pairs.parquet", [asdict(pair) for pair in chosen])
    (out / "train_metrics.json").write_text(json.dumps({"loss": 0.6}))
    (out / "metrics.json").write_text(json.dumps({"eval/reward": 0.1}))
    design = DesignState(dim, config.selection.reg)
    torch.save({"design": design.state_dict(), "round": 2, "selected_ids": list(result.pair_ids)},
               out / "selector_state.pt")
    (out / "train" / "checkpoint").mkdir(parents=True)
    torch.save({"exp_avg": torch.zeros(MB)}, out / "train" / "checkpoint" / "optimizer.pt")
    snapshot = str(out / "selector_state.pt")
    save_round_state(run_dir, RoundState(round=1, phase="evaluated", selector_state_path=snapshot))
    return out


def test_a_round_at_cluster_scale_uploads_megabytes_not_the_design_matrices(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs" / "cluster-7b.yaml")
    dim = config.features.projection_dim
    out = _write_round(tmp_path / "run", config, dim)
    snapshot = (out / "selector_state.pt").stat().st_size
    assert dim == 8192 and snapshot >= 2 * dim * dim * 8  # V and V⁻¹ in float64: 1 GiB on disk
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * (3 * MB))
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="scale")

    tracker = Tracker.open(cfg, run_name="loop")
    tracker.log_round(out, 1, adapter_dir=None)
    tracker.log_round(out, 2, adapter_dir=adapter)

    client = MlflowClient(tracking_uri=cfg.uri)
    first = _uploaded_bytes(client, tracker.run_id, "round_001")
    readable = {"metrics.json", "train_metrics.json", "selection.json", "selected_pairs.parquet", "labels.jsonl"}
    assert set(first) == {f"round_001/{name}" for name in readable}
    assert sum(first.values()) < 5 * MB
    second = _uploaded_bytes(client, tracker.run_id, "round_002")
    assert second["round_002/adapter/adapter_model.safetensors"] == 3 * MB
    assert sum(second.values()) < 3 * MB + 5 * MB


def test_design_state_is_uploaded_once_as_one_archive_that_restores_the_run_dir(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml")
    run_dir = tmp_path / "run"
    _write_round(run_dir, config, dim=16)
    (run_dir / "features").mkdir()
    torch.save({"pair_ids": ["a"], "rows": torch.ones(1, 16)}, run_dir / "features" / "features-0.pt")
    cfg = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="design")
    tracker = Tracker.open(cfg, run_name="loop")

    tracker.log_design_state(run_dir)

    client = MlflowClient(tracking_uri=cfg.uri)
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["design_state"]
    local = client.download_artifacts(tracker.run_id, "design_state/design_state.tar.gz", str(tmp_path / "down"))
    with tarfile.open(local) as archive:
        assert sorted(archive.getnames()) == ["features/features-0.pt", "round_001/selector_state.pt", "state.json"]
        archive.extractall(tmp_path / "restored", filter="data")
    restored = tmp_path / "restored"
    assert (restored / "state.json").read_text() == (run_dir / "state.json").read_text()
    saved = torch.load(restored / "round_001" / "selector_state.pt", weights_only=False)
    assert torch.equal(saved["design"]["v_inv"], torch.eye(16, dtype=torch.float64) / config.selection.reg)
    assert sorted(path.name for path in run_dir.iterdir()) == ["features", "round_001", "state.json"]
