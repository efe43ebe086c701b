"""The loop's metrics reach Ray's metrics export: recorded in this driver, scraped from the node's Prometheus
endpoint, the way the Ray dashboard's Metrics view and a Prometheus server read them."""

from __future__ import annotations

from jobs.ray_metrics import LabellingProgress, RayMetricsSink
from tests.jobs.ray_metrics_export import bucket_counts, wait_for_ray_metrics

ROUND_METRICS = {
    "labels": 8.0, "selection/pairs_available": 12.0, "selection/score_mean": 0.5, "selection/score_max": 0.875,
    "time/generation_s": 2.0, "time/selection_s": 0.25, "oracle/latency_s": 0.75, "eval/reward": 0.2,
    "labels/both_bad": 2.0,
}


def test_a_rounds_metrics_are_exported_with_their_values(ray_cluster) -> None:
    RayMetricsSink()(ROUND_METRICS, 3)
    families = wait_for_ray_metrics(
        {"ray_activealign_loop_phase_seconds", "ray_activealign_loop_oracle_latency_seconds"},
        {"ray_activealign_loop_round": 3.0, "ray_activealign_loop_labels": 8.0, "ray_activealign_loop_candidate_pairs":
         12.0, "ray_activealign_loop_pick_score_mean": 0.5, "ray_activealign_loop_pick_score_max": 0.875,
         "ray_activealign_loop_labels_both_bad": 2.0},
    )
    # one observation per histogram, counted from the first bucket bound it does not exceed (the buckets, not
    # _sum: Ray exports a histogram's sum from bucket midpoints, 2.0 s in (1, 5] as 3.0)
    phases = "ray_activealign_loop_phase_seconds"
    assert bucket_counts(families, phases, phase="generation") == {"0.5": 0, "1.0": 0, "5.0": 1}
    assert bucket_counts(families, phases, phase="selection") == {"0.5": 1, "1.0": 1, "5.0": 1}
    assert bucket_counts(families, "ray_activealign_loop_oracle_latency_seconds") == {"0.5": 0, "1.0": 1, "5.0": 1}



def test_labelling_progress_reaches_ray_and_mlflow(ray_cluster, tmp_path) -> None:
    """While round 2 waits for people: 0 of 3 labelled, then 3 of 3 — the gauges hold the last values, MLflow keeps
    both at step 2."""
    from mlflow import MlflowClient

    from system.config import TrackingConfig
    from system.tracking import Tracker

    config = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="progress")
    tracker = Tracker.open(config, run_name="progress")
    progress = LabellingProgress(tracker)
    progress(2, 0, 3)
    progress(2, 3, 3)
    wait_for_ray_metrics(set(), {"ray_activealign_loop_human_labelled": 3.0, "ray_activealign_loop_human_pending": 0.0})
    client = MlflowClient(tracking_uri=config.uri)
    history = [(m.step, m.value) for m in client.get_metric_history(tracker.run_id, "labelling/pending")]
    assert sorted(history) == [(2, 0.0), (2, 3.0)]
    tracker.finish("FINISHED")
