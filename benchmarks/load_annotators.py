"""Bounded load of annotators on `activealign serve` (human oracle) over loopback: next-task and answer latency
(p50/p99), and that every answer lands exactly once.

Starts `activealign serve` in its own session (its own local Ray, 127.0.0.1, a free port, a fresh SQLite store,
``oracle.human.annotations_per_pair`` = k), adds ``--annotators`` people to the store, each with their own token,
queues ``--answers`` / k pairs with the run token, then lets every person fetch (``GET /v1/tasks/next``) and answer
(``POST /v1/tasks/{id}/answer``, a seeded random choice) concurrently until nothing is left for them. A handed-out
task holds one of its k places for its person (``oracle.human.reservation_s``), so a 409 (the pair got its k answers
between fetch and answer) should not happen; it is counted and the person fetches again. A 503 is counted and
retried after its Retry-After. Afterwards the store is read back: every acknowledged answer stored once (0 lost,
0 duplicated), no pair handed twice to one person, exactly k answers and one majority label per pair.

    python benchmarks/load_annotators.py --annotators 50 --answers 2000 --k 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from oracle_server import free_port, port_is_free, serving

from system.labels import LabelStore
from system.labels.annotators import AnnotatorRegistry

TOKEN = "load-annotators-token-0123456789"


@dataclass
class Observed:
    """What the simulated annotators saw: latencies (s) per call, statuses, what was offered and acknowledged."""

    next_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    offered: Counter = field(default_factory=Counter)  # (annotator, pair_id) -> times handed out
    acknowledged: list[tuple[str, str]] = field(default_factory=list)  # (annotator, pair_id) answered with 200


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) of ``samples`` in seconds, as milliseconds."""
    ordered = sorted(samples) or [float("nan")]
    return {"count": len(samples), "p50_ms": round(1000 * statistics.median(ordered), 1),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)}


async def call(client: httpx.AsyncClient, observed: Observed, latencies: list[float], method: str, path: str,
               **kwargs: object) -> httpx.Response:
    """One request, retried after Retry-After while the service answers 503; each try's latency is recorded."""
    while True:
        started = time.perf_counter()
        response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
        latencies.append(time.perf_counter() - started)
        observed.statuses[f"{method} {response.status_code}"] += 1
        if response.status_code != 503:
            return response
        await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def annotator(url: str, name: str, token: str, seed: int, observed: Observed,
                    think_s: float = 0.0) -> None:
    """Fetch and answer until the service has nothing left for ``name``, reading each pair for a time drawn
    uniformly from [0, 2·``think_s``] seconds between fetch and answer."""
    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        while True:
            fetched = await call(client, observed, observed.next_s, "GET", "/v1/tasks/next")
            fetched.raise_for_status()
            task = fetched.json()["task"]
            if task is None:
                return
            observed.offered[name, task["pair_id"]] += 1
            if think_s:
                await asyncio.sleep(rng.uniform(0.0, 2.0 * think_s))
            answered = await call(client, observed, observed.answer_s, "POST", f"/v1/tasks/{task['task_id']}/answer",
                                  json={"choice": rng.choice([1, 2]), "answer_ms": 1000})
            if answered.status_code == 200:
                observed.acknowledged.append((name, task["pair_id"]))
            elif answered.status_code != 409:
                answered.raise_for_status()


def queue_pairs(url: str, count: int) -> list[str]:
    """Queue ``count`` pairs (round 1) with the run token, in requests of 500; returns their ids."""
    ids = [f"load-{i}" for i in range(count)]
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120) as client:
        for start in range(0, count, 500):
            pairs = [{"pair_id": pair_id, "prompt": f"Question {pair_id}?", "response_1": f"An answer to {pair_id}.",
                      "response_2": f"Another answer to {pair_id}."} for pair_id in ids[start:start + 500]]
            client.post("/v1/label", json={"pairs": pairs, "round": 1}).raise_for_status()
    return ids


def stored(store: Path) -> tuple[Counter, Counter, int, Counter]:
    """From the store: (annotator, pair_id) answer rows, answers per pair, majority labels, tasks per status."""
    with sqlite3.connect(store) as db:
        answers = db.execute("select annotator, pair_id from labels where oracle = 'human' and annotator != ''")
        rows = Counter(tuple(row) for row in answers)
        per_pair = Counter(pair_id for _, pair_id in rows.elements())
        majority = db.execute("select count(*) from labels where oracle = 'human' and annotator = ''").fetchone()[0]
        statuses = Counter(dict(db.execute("select status, count(*) from tasks group by status").fetchall()))
    return rows, per_pair, int(majority), statuses


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--answers", type=int, default=2000, help="answers in all (a multiple of --k)")
    parser.add_argument("--k", type=int, default=5, help="oracle.human.annotations_per_pair (odd)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--think-s", type=float, default=0.0,
                        help="mean seconds a person reads a pair before answering (0: answer at once, saturating)")
    parser.add_argument("--start-timeout", type=float, default=600, help="seconds the service may take to start")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.answers % args.k or args.annotators < args.k:
        parser.error("--answers must be a multiple of --k, and --annotators at least --k")
    pairs = args.answers // args.k
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        store = workdir / "labels.db"
        oracle = {"kind": "human", "port": port, "label_store_url": f"sqlite:///{store}",
                  "human": {"annotations_per_pair": args.k}}
        with serving(oracle, workdir, TOKEN, timeout=args.start_timeout) as url:
            with LabelStore(f"sqlite:///{store}") as label_store:
                registry = AnnotatorRegistry(label_store)
                tokens = {f"person-{i:03d}": registry.add(f"person-{i:03d}")[1] for i in range(args.annotators)}
            queued = queue_pairs(url, pairs)
            observed = Observed()
            load_before = os.getloadavg()
            started = time.perf_counter()

            async def everyone() -> None:
                await asyncio.gather(*(annotator(url, name, token, args.seed * 100_003 + i, observed,
                                                 args.think_s)
                                       for i, (name, token) in enumerate(tokens.items())))

            asyncio.run(everyone())
            wall_s = time.perf_counter() - started
            load_after = os.getloadavg()
        rows, per_pair, majority, task_statuses = stored(store)
    acknowledged = Counter(observed.acknowledged)
    report = {
        "annotators": args.annotators, "k": args.k, "think_s": args.think_s, "pairs": pairs,
        "answers_expected": args.answers,
        "wall_s": round(wall_s, 2), "answers_per_s": round(len(observed.acknowledged) / wall_s, 1),
        "next_task": percentiles_ms(observed.next_s), "answer": percentiles_ms(observed.answer_s),
        "statuses": dict(sorted(observed.statuses.items())),
        "acknowledged": len(observed.acknowledged),
        "lost": sum(1 for key in acknowledged if rows[key] == 0),
        "duplicated": sum(count - 1 for count in rows.values() if count > 1),
        "stored_not_acknowledged": sum(1 for key in rows if key not in acknowledged),
        "pairs_given_twice_to_one_person": sum(1 for count in observed.offered.values() if count > 1),
        "pairs_with_k_answers": sum(1 for pair_id in queued if per_pair[pair_id] == args.k),
        "pairs_with_other_counts": sum(1 for pair_id in queued if per_pair[pair_id] != args.k),
        "majority_labels": majority, "tasks": dict(task_statuses),
        "cpus": os.cpu_count(), "loadavg_1m_before": round(load_before[0], 2),
        "loadavg_1m_after": round(load_after[0], 2),
        "port_freed_after_stop": port_is_free(port),
    }
    print(f"{args.annotators} annotators, k={args.k}, {pairs} pairs, {args.think_s} s mean reading time, loopback, "
          "one ingress replica, SQLite store; "
          f"{os.cpu_count()} CPUs, load average (1 min) {report['loadavg_1m_before']} before, "
          f"{report['loadavg_1m_after']} after")
    print(f"{'call':<10} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name in ("next_task", "answer"):
        row = report[name]
        print(f"{name:<10} {row['count']:>8} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f}")
    print(f"{report['acknowledged']} answers in {report['wall_s']} s ({report['answers_per_s']}/s); lost "
          f"{report['lost']}, duplicated {report['duplicated']}, given twice to one person "
          f"{report['pairs_given_twice_to_one_person']}, pairs with exactly k answers {report['pairs_with_k_answers']}"
          f"/{pairs}; statuses {report['statuses']}")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
