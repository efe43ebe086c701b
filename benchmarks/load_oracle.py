"""Bounded load on `activealign serve` over loopback: labels/s, p50/p99 latency, errors, and exactly-once storage.

Starts `activealign serve` in its own session (its own local Ray, 127.0.0.1, a free port, a fresh SQLite
store), measures one sequential client (the baseline), then ``--clients`` concurrent clients posting
``--pairs`` fresh pairs per request, for at most ``--requests`` requests and ``--seconds`` seconds.
Refusals under overload (HTTP 503 with Retry-After) are counted, not retried, so the numbers show the
service's own limits. Afterwards every label the service acknowledged must be in the store exactly once,
and stopping the service (SIGTERM) must free its port. Prints a table and the concurrent/sequential ratio.

    python benchmarks/load_oracle.py --oracle programmatic --clients 32 --requests 2000 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from bench_oracle import response_text
from oracle_server import free_port, port_is_free, serving

TOKEN = "load-bench-token-0123456789"
PROMPT = "How do I bake bread?"


def oracle_settings(kind: str, workdir: Path) -> dict:
    """``oracle`` config for each benchmarked oracle; replay gets a labelled file holding every pair id used."""
    if kind == "programmatic":
        return {"kind": "programmatic", "callable": "benchmarks.rewards:politeness"}
    if kind == "minilm":
        return {"kind": "reward_model", "model": "minilm", "task_description": "A polite answer."}
    dataset = workdir / "replay.jsonl"
    with dataset.open("w") as out:
        for i in range(200_000):
            out.write(json.dumps({"pair_id": f"p{i}", "prompt": PROMPT, "chosen": response_text(i, 3),
                                  "rejected": response_text(i, 5)}) + "\n")
    return {"kind": "replay", "dataset": str(dataset)}


@dataclass
class PhaseResult:
    """One load phase: what was sent, what came back, how fast."""

    clients: int
    requests: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    retry_after: set[str] = field(default_factory=set)
    acknowledged: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        ok = self.statuses.get(200, 0)
        lat = sorted(self.latencies_s) or [float("nan")]
        return {
            "clients": self.clients, "requests": self.requests, "wall_s": round(self.wall_s, 3),
            "labels_per_s": round(len(self.acknowledged) / self.wall_s, 2) if self.wall_s else 0.0,
            "p50_ms": round(1000 * statistics.median(lat), 1),
            "p99_ms": round(1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))], 1),
            "ok": ok, "refused_503": self.statuses.get(503, 0),
            "errors": sum(count for status, count in self.statuses.items() if status not in (200, 503)),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items(), key=str)},
            "retry_after": sorted(self.retry_after),
        }


async def run_phase(url: str, name: str, clients: int, requests: int, seconds: float, pairs: int) -> PhaseResult:
    """``clients`` workers share a counter of ``requests`` label calls; each stops at the deadline."""
    result = PhaseResult(clients=clients)
    next_index = iter(range(requests))
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120,
                                 limits=limits) as client:

        async def worker() -> None:
            for index in next_index:
                if time.monotonic() >= deadline:
                    return
                ids = [f"{name}-{index}-{k}" for k in range(pairs)]
                body = {"pairs": [{"pair_id": pair_id, "prompt": PROMPT, "response_1": response_text(index + k, 3),
                                   "response_2": response_text(index + k, 5)} for k, pair_id in enumerate(ids)]}
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/label", json=body)
                except httpx.TransportError:
                    result.statuses["transport-error"] += 1
                    continue
                result.latencies_s.append(time.perf_counter() - started)
                result.requests += 1
                result.statuses[response.status_code] += 1
                if response.status_code == 200:
                    result.acknowledged += [row["pair_id"] for row in response.json()["labels"]]
                elif "retry-after" in response.headers:
                    result.retry_after.add(response.headers["retry-after"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        result.wall_s = time.perf_counter() - started
    return result


def stored_counts(store: Path) -> dict[str, int]:
    with sqlite3.connect(store) as db:
        return dict(db.execute("select pair_id, count(*) from labels group by pair_id").fetchall())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", choices=["programmatic", "replay", "minilm"], default="programmatic")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--pairs", type=int, default=4, help="pairs per request")
    parser.add_argument("--baseline-requests", type=int, default=100)
    parser.add_argument("--max-ongoing", type=int, default=None, help="oracle.max_ongoing_requests override")
    parser.add_argument("--max-queued", type=int, default=None, help="oracle.max_queued_requests override")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        store = workdir / "labels.db"
        oracle = {**oracle_settings(args.oracle, workdir), "port": port, "label_store_url": f"sqlite:///{store}"}
        for key, value in (("max_ongoing_requests", args.max_ongoing), ("max_queued_requests", args.max_queued)):
            if value is not None:
                oracle[key] = value
        with serving(oracle, workdir, TOKEN) as url:
            baseline = asyncio.run(run_phase(url, "seq", 1, args.baseline_requests, args.seconds, args.pairs))
            load = asyncio.run(run_phase(url, "load", args.clients, args.requests, args.seconds, args.pairs))
        counts = stored_counts(store)
        acknowledged = baseline.acknowledged + load.acknowledged
        report = {
            "oracle": args.oracle, "pairs_per_request": args.pairs,
            "sequential": baseline.summary(), "concurrent": load.summary(),
            "ratio_concurrent_vs_sequential": round(load.summary()["labels_per_s"]
                                                    / max(baseline.summary()["labels_per_s"], 1e-9), 2),
            "acknowledged": len(acknowledged), "acknowledged_unique": len(set(acknowledged)),
            "acknowledged_stored_once": all(counts.get(pair_id) == 1 for pair_id in acknowledged),
            "duplicates_in_store": sum(1 for count in counts.values() if count > 1),
            "port_freed_after_stop": port_is_free(port),
        }
    print(f"oracle={args.oracle}, {args.pairs} pairs/request, loopback, one ingress replica")
    print(f"{'phase':<11} {'clients':>7} {'requests':>8} {'labels/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'503':>5} {'errors':>6}")
    for phase in ("sequential", "concurrent"):
        row = report[phase]
        print(f"{phase:<11} {row['clients']:>7} {row['requests']:>8} {row['labels_per_s']:>9.1f} "
              f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['refused_503']:>5} {row['errors']:>6}")
    print(f"throughput ratio concurrent/sequential: {report['ratio_concurrent_vs_sequential']:.2f}x; "
          f"acknowledged labels stored exactly once: {report['acknowledged_stored_once']} "
          f"({report['acknowledged']} labels); port freed after stop: {report['port_freed_after_stop']}")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
