"""Oracle service throughput: batched (@serve.batch) vs unbatched MiniLM judge, same run, same machine.

Bounded loopback load: ``--requests`` single-pair ``POST /v1/label`` calls with ``--concurrency`` in
flight, against the reward-model oracle on a local Ray Serve. Each mode gets a fresh label store and
fresh pair ids (so no verdict is served from the store). Prints labels/s, p50/p99 latency and the
batched/unbatched throughput ratio.

    python benchmarks/bench_oracle.py --requests 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import httpx

TOKEN = "bench-token-0123456789"
WORDS = [
    "please", "thank", "you", "kindly", "the", "answer", "is", "here", "bread", "flour", "water", "yeast", "oven",
    "bake", "slowly", "cells", "mitochondria", "energy", "protein", "polite", "sorry", "help", "sure", "happy",
]


def response_text(i: int, salt: int) -> str:
    return " ".join(WORDS[(i * 7 + k * salt) % len(WORDS)] for k in range(12 + i % 20))


async def run_load(url: str, mode: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """(wall seconds, per-request latencies) for ``requests`` single-pair label calls."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                                 limits=limits) as client:

        async def one(i: int) -> None:
            body = {"pairs": [{"pair_id": f"{mode}-{i}", "prompt": "How do I bake bread?",
                               "response_1": response_text(i, 3), "response_2": response_text(i, 5)}]}
            async with gate:
                started = time.perf_counter()
                response = await client.post("/v1/label", json=body)
                latencies.append(time.perf_counter() - started)
            response.raise_for_status()

        await asyncio.gather(*(one(-i - 1) for i in range(concurrency)))  # warm-up, not timed
        latencies.clear()
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return time.perf_counter() - started, latencies


def mean_batch_size(url: str) -> float:
    """Mean items per ``@serve.batch`` call of the judge, from the service's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        if family.name == "activealign_oracle_batch_size":
            values = {s.name: s.value for s in family.samples if s.labels.get("method") == "judge"}
            return values[f"{family.name}_sum"] / max(values[f"{family.name}_count"], 1.0)
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-wait-s", type=float, default=0.01)
    args = parser.parse_args()
    os.environ.update(ACTIVEALIGN_API_TOKEN=TOKEN, HF_HUB_OFFLINE="1", RAY_USAGE_STATS_ENABLED="0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from actors.oracle import start_oracle_service, stop_oracle_service
    from system.config import config_from_dict

    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    results: dict[str, tuple[float, list[float]]] = {}
    batch_means: dict[str, float] = {}
    modes = {"batched": (args.max_batch_size, args.batch_wait_s), "unbatched": (1, 0.0)}
    with tempfile.TemporaryDirectory() as tmp:
        for index, (mode, (batch_size, wait_s)) in enumerate(modes.items()):
            config = config_from_dict({
                "oracle": {"kind": "reward_model", "port": port, "max_batch_size": batch_size,
                           "batch_wait_timeout_s": wait_s, "label_store_url": f"sqlite:///{Path(tmp) / mode}.db"},
                "cluster": {"oracle": {"num_cpus": 1}},
            })
            url = start_oracle_service(config)
            results[mode] = asyncio.run(run_load(url, mode, args.requests, args.concurrency))
            batch_means[mode] = mean_batch_size(url)
            stop_oracle_service(shutdown=index == len(modes) - 1)
    ray.shutdown()
    print(f"{args.requests} label requests, concurrency {args.concurrency}, MiniLM judge, 1 replica, CPU")
    print(f"{'mode':<10} {'labels/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'mean batch':>10}")
    throughput = {}
    for mode, (wall, latencies) in results.items():
        throughput[mode] = args.requests / wall
        print(f"{mode:<10} {throughput[mode]:>9.1f} {1000 * percentile(latencies, 50):>8.1f} "
              f"{1000 * percentile(latencies, 99):>8.1f} {batch_means[mode]:>10.1f}")
    print(f"throughput ratio batched/unbatched: {throughput['batched'] / throughput['unbatched']:.2f}x (goal >= 3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
