"""The active loop's metrics in Ray's metrics export, next to Ray's own: the dashboard's Metrics view, or the
Prometheus endpoint every node serves (Ray prefixes each name with ``ray_``).

``activealign_loop_round``, ``_labels`` (labelled pairs so far), ``_candidate_pairs`` (pairs the round selected
from), ``_pick_score_mean`` / ``_pick_score_max`` (selection scores of the round's picks) are gauges;
``activealign_loop_phase_seconds`` (tag ``phase``: generation, selection, labelling, training, evaluation, and
round for the whole round) and ``activealign_loop_oracle_latency_seconds`` (the oracle's answer to a round's
label request) are histograms; read their buckets and counts, as Ray exports a histogram's ``_sum`` from bucket
midpoints. While a round waits for people, ``activealign_loop_human_labelled`` and ``_human_pending`` say how many of
its pairs have their label and how many still wait (:class:`LabellingProgress`, which logs the same to MLflow).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ray.util.metrics import Gauge, Histogram

if TYPE_CHECKING:
    from system.tracking import Tracker

GAUGES: dict[str, tuple[str, str]] = {
    "labels": ("activealign_loop_labels", "Pairs labelled so far"),
    "selection/pairs_available": ("activealign_loop_candidate_pairs", "Candidate pairs the round selected from"),
    "selection/score_mean": ("activealign_loop_pick_score_mean", "Mean selection score of the round's picks"),
    "selection/score_max": ("activealign_loop_pick_score_max", "Highest selection score of the round's picks"),
    "labels/both_bad": ("activealign_loop_labels_both_bad",
                        "Human-labelled pairs of the round found both bad (kept out of preference training)"),
    "labels/ties": ("activealign_loop_labels_ties", "Human-labelled pairs of the round aggregated to a tie"),
}
"""Loop metric key → (Ray gauge name, description)."""

SECONDS_BUCKETS = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0]


class RayMetricsSink:
    """A :class:`system.loop.MetricsSink` that records a round's metrics as Ray gauges and histograms; create it in
    the driver after Ray is initialised."""

    def __init__(self) -> None:
        self.round = Gauge("activealign_loop_round", "Last finished round (0: the untrained policy evaluated)")
        self.gauges = {key: Gauge(name, description) for key, (name, description) in GAUGES.items()}
        self.phase_seconds = Histogram("activealign_loop_phase_seconds", "Wall-clock seconds of a round's phase",
                                       boundaries=SECONDS_BUCKETS, tag_keys=("phase",))
        self.oracle_latency = Histogram("activealign_loop_oracle_latency_seconds",
                                        "Seconds the oracle took to label a round's picks", boundaries=SECONDS_BUCKETS)

    def __call__(self, metrics: Mapping[str, float], round_index: int) -> None:
        self.round.set(round_index)
        for key, gauge in self.gauges.items():
            if key in metrics:
                gauge.set(metrics[key])
        for key, seconds in metrics.items():
            if key.startswith("time/"):
                self.phase_seconds.observe(seconds, tags={"phase": key.removeprefix("time/").removesuffix("_s")})
        if "oracle/latency_s" in metrics:
            self.oracle_latency.observe(metrics["oracle/latency_s"])


class LabellingProgress:
    """The oracle client's progress hook (:data:`system.oracle_client.LabelProgress`) while a round waits for
    people: gauges ``activealign_loop_human_labelled`` / ``_human_pending`` and, with a tracker, the MLflow metrics
    ``labelling/labelled`` and ``labelling/pending`` at step = round (one value each time the count grows). Create it
    in the driver after Ray is initialised."""

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker
        self.labelled = Gauge("activealign_loop_human_labelled", "Pairs of the waiting round with their label")
        self.pending = Gauge("activealign_loop_human_pending", "Pairs of the waiting round still waiting for people")

    def __call__(self, round_index: int, labelled: int, total: int) -> None:
        self.labelled.set(labelled)
        self.pending.set(total - labelled)
        if self.tracker is not None:
            self.tracker.log_metrics({"labelling/labelled": labelled, "labelling/pending": total - labelled},
                                     step=round_index)
