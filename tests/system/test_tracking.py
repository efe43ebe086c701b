"""The MLflow tracker writes a real sqlite store; everything is read back with MlflowClient."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from system.config import TrackingConfig, flatten_config, load_config
from system.tracking import Tracker


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
