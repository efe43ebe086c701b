"""Prometheus metrics of one ingress replica (served as text at ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class OracleMetrics:
    """Request latency, oracle batch sizes, label counts by oracle and the human queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "activealign_oracle_request_seconds", "Request latency by endpoint", ["endpoint"], registry=self.registry
        )
        self.requests = Counter(
            "activealign_oracle_requests", "Requests by endpoint and status code", ["endpoint", "status"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "activealign_oracle_batch_size", "Items per @serve.batch call of the machine oracle", ["method"],
            buckets=BATCH_BUCKETS, registry=self.registry,
        )
        self.labels = Gauge("activealign_oracle_labels", "Stored labels by oracle", ["oracle"], registry=self.registry)
        self.queue_depth = Gauge(
            "activealign_oracle_queue_depth", "Human tasks waiting for an answer", registry=self.registry
        )

    def render(self, labels_by_oracle: dict[str, int], pending_tasks: int) -> bytes:
        for oracle, count in labels_by_oracle.items():
            self.labels.labels(oracle=oracle).set(count)
        self.queue_depth.set(pending_tasks)
        return generate_latest(self.registry)
