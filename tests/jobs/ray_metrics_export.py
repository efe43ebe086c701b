"""Read the metrics a local Ray node exports for Prometheus (the same series its dashboard's Metrics view shows)."""

from __future__ import annotations

import time
from collections.abc import Mapping

import httpx
import ray
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def scrape_ray_metrics() -> dict[str, list[Sample]]:
    """Samples by metric family name from this node's Prometheus endpoint (port from Ray's node info)."""
    node = next(node for node in ray.nodes() if node["Alive"])
    text = httpx.get(f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def wait_for_ray_metrics(
    names: set[str], expected: Mapping[str, float] | None = None, timeout_s: float = 90.0
) -> dict[str, list[Sample]]:
    """Scrape until every family in ``names`` is exported and each gauge in ``expected`` has its value (Ray
    reports metrics every few seconds, so a first scrape may lack them or show an earlier value)."""
    wanted = names | set(expected or {})
    deadline = time.monotonic() + timeout_s
    while True:
        families = scrape_ray_metrics()
        exported = wanted <= set(families)
        values = {name: sample_value(families, name) for name in expected or {}} if exported else {}
        if (exported and values == dict(expected or {})) or time.monotonic() > deadline:
            assert exported, f"not exported after {timeout_s} s: {sorted(wanted - set(families))}"
            assert values == dict(expected or {}), values
            return families
        time.sleep(1.0)


def sample_value(families: dict[str, list[Sample]], name: str, **tags: str) -> float:
    """The value of the one sample called ``name`` (e.g. a histogram's ``…_count``) whose labels include ``tags``."""
    family = name.removesuffix("_bucket").removesuffix("_count")
    values = [s.value for s in families[family] if s.name == name and tags.items() <= s.labels.items()]
    assert len(values) == 1, (name, tags, families[family])
    return values[0]


def bucket_counts(families: dict[str, list[Sample]], name: str, **tags: str) -> dict[str, float]:
    """A histogram's cumulative counts at the bounds 0.5, 1 and 5 (its ``…_bucket`` samples)."""
    return {bound: sample_value(families, f"{name}_bucket", le=bound, **tags) for bound in ("0.5", "1.0", "5.0")}
