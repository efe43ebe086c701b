"""Does active selection save labels online? Every offered strategy against random, paired, over many seeds.

The task (:mod:`benchmarks.strategy_task`): the offline tiny model, 40 prompts × 8 responses per round
(1,120 candidate pairs), 48 Bradley–Terry labels per round from the MiniLM judge, 8 rounds, DPO with LoRA —
through :class:`~system.loop.ActiveLoop` on the in-process parts (the product's code, no Ray). Each seed
runs every strategy on the same prompts, round-1 pool and training/evaluation seeds.

Per run, the primary score is the area under the held-out preference-accuracy curve: the mean over rounds
1 … R of the accuracy of the implicit reward on ≥ 1000 fixed judged pairs (round 0 is πref for everyone).
Each strategy is compared with random on the per-seed differences: mean, percentile-bootstrap 95% CI,
one-sided Wilcoxon signed-rank p-value (H1: the strategy's AUC is higher) and Holm's correction over the
strategies. Two controls calibrate the harness:

- positive: a task the selector must win — labels Bradley–Terry in a linear reward θ*ᵀφ of exactly the
  fixed-encoder features φ the selector sees (same pools, held-out pairs, budget and rounds; θ̂ fit by logistic
  regression on the labels so far) — ADPO's greedy D-optimal design against random picks;
- negative: random against random with another selection seed, which must not come out significant.

    .venv/bin/python benchmarks/strategies.py --seeds 20 --jobs 2      # the shipped result
    .venv/bin/python benchmarks/strategies.py --quick                  # a 2-seed smoke run, a few minutes

Writes ``strategies.json``, ``strategies.md`` and ``strategies.png`` to ``--out`` (default ``benchmarks/results``);
finished runs are kept under ``--work`` and reused, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paired_stats import Comparison, compare  # noqa: E402
from benchmarks.strategy_task import (  # noqa: E402
    HeldOut,
    Task,
    heldout_pairs,
    judge_temperature,
    round_one_pool,
    run_strategy,
    task_config,
    write_task_prompts,
)
from system.features import fixed_encoder_features  # noqa: E402
from system.fileio import atomic_write_text  # noqa: E402
from system.generation import candidate_pairs  # noqa: E402
from system.local_parts import LocalPolicy  # noqa: E402
from system.oracles.base import pair_uniform  # noqa: E402
from system.selection import LocalPool, fit_linear_dpo, get_strategy, select_round  # noqa: E402
from system.selection.shards import blocked_rows  # noqa: E402
from system.types import Candidate, CandidatePair  # noqa: E402

STRATEGIES = ("random", "activedpo", "adpo", "adpo_plus", "apo")
NEGATIVE_OFFSET = 1000
"""Selection-seed shift of the negative control's second random run."""


@dataclass(frozen=True)
class Job:
    """One (seed, strategy, selection-seed offset) run of the task."""

    task: Task
    workdir: Path
    seed: int
    strategy: str
    temperature: float
    offset: int = 0

    @property
    def result_path(self) -> Path:
        return self.workdir / f"seed_{self.seed}" / f"{self.strategy}+{self.offset}.json"


def run_job(job: Job) -> dict[str, list[float]]:
    """Run ``job`` (or read its result from an earlier sweep)."""
    if job.result_path.exists():
        return dict(json.loads(job.result_path.read_text()))
    config = task_config(job.task, job.workdir, job.seed, job.strategy, job.temperature, job.offset)
    heldout = seed_heldout(job.task, job.workdir, job.seed, job.temperature)
    curves = run_strategy(config, heldout)
    atomic_write_text(job.result_path, json.dumps(curves))
    return curves


def seed_heldout(task: Task, workdir: Path, seed: int, temperature: float) -> HeldOut:
    """The seed's fixed held-out pairs, generated once and cached under ``workdir``."""
    path = workdir / f"seed_{seed}" / "heldout.json"
    if path.exists():
        return heldout_from_json(json.loads(path.read_text()))
    config = task_config(task, workdir, seed, "random", temperature)
    heldout = heldout_pairs(config, write_task_prompts(task, workdir), LocalPolicy(config))
    atomic_write_text(path, json.dumps({"pairs": [asdict(pair) for pair in heldout.pairs], "prob_1": heldout.prob_1}))
    return heldout


def heldout_from_json(saved: dict) -> HeldOut:
    return HeldOut([CandidatePair(**pair) for pair in saved["pairs"]], list(saved["prob_1"]))


def auc(curve: list[float]) -> float:
    """Area under a per-round curve, normalised: the mean over rounds 1 … R (round 0 is shared by all)."""
    return sum(curve[1:]) / (len(curve) - 1)


def positive_control(task: Task, workdir: Path, seed: int, temperature: float) -> dict[str, float]:
    """Accuracy AUC of ADPO's greedy D-optimal picks and of random picks when the labels are Bradley–Terry in a
    linear reward of exactly the features the selector sees.

    Pool: the seed's round-1 candidate pairs (drawn once, as APO does); φ = fixed-encoder features [N, d];
    θ* ~ N(0, I) scaled like the task's judge (the 75th percentile of |θ*ᵀφ| over the held-out pairs maps to
    P = 0.8); label of pair i: y1 preferred iff u(seed, pair id) < σ(θ*ᵀφ_i). Each round picks
    ``labels_per_round`` unlabelled pairs (V = λI + Σ over the pairs labelled so far, the product's
    ``select_round``), θ̂ = ridge logistic MLE on all labels so far, accuracy = agreement of sign θ̂ᵀφ with
    sign θ*ᵀφ on the held-out pairs.
    """
    config = task_config(task, workdir, seed, "adpo", temperature)
    random_run = task_config(task, workdir, seed, "random", temperature)
    policy = LocalPolicy(config)
    pool_pairs = candidate_pairs([Candidate(**{**row, "token_ids": tuple(row["token_ids"]),
                                               "logprobs": tuple(row["logprobs"])})
                                  for row in map(json.loads, round_one_pool(random_run).splitlines())])
    heldout = seed_heldout(task, workdir, seed, temperature)
    phi = fixed_encoder_features(policy.model, policy.tokenizer, pool_pairs, config).double()
    test = fixed_encoder_features(policy.model, policy.tokenizer, heldout.pairs, config).double()
    direction = torch.randn(phi.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    theta = direction * math.log(4.0) / float(torch.quantile((test @ direction).abs(), 0.75))
    prefer_first = torch.tensor([pair_uniform(seed, pair.pair_id) for pair in pool_pairs], dtype=torch.float64) \
        < torch.sigmoid(phi @ theta)
    truth = (test @ theta) > 0
    result = {}
    for name in ("adpo", "random"):
        rule, labelled, accuracy = get_strategy(name), [], []
        for round_index in range(1, task.rounds + 1):
            taken = set(labelled)
            free = [index for index in range(len(pool_pairs)) if index not in taken]
            rows = rule.design_rows(phi[free], None)
            picks, _ = select_round(LocalPool(rows, blocked_rows(rows)), [str(i) for i in free],
                                    rule.design_rows(phi[labelled], None), task.labels_per_round, rule,
                                    round_index, config.selection.reg, config.selection.refactor_every, seed)
            labelled += [int(pair_id) for pair_id in picks.pair_ids]
            estimate = fit_linear_dpo(phi[labelled], prefer_first[labelled])
            accuracy.append(float(((test @ estimate > 0) == truth).double().mean()))
        result[name] = sum(accuracy) / len(accuracy)
    return result


def check_paired(task: Task, workdir: Path, jobs: list[Job], temperature: float) -> None:
    """Every run of a seed saw the same round-1 pool; raises when the comparison would not be paired."""
    for seed in sorted({job.seed for job in jobs}):
        pools = {round_one_pool(task_config(task, workdir, seed, job.strategy, temperature, job.offset))
                 for job in jobs if job.seed == seed}
        if len(pools) != 1:
            raise RuntimeError(f"seed {seed}: strategies saw different round-1 pools; the comparison is not paired")


def summarise(task: Task, seeds: list[int], strategies: list[str], curves: dict[str, list[dict]],
              negative: list[dict], positive: list[dict[str, float]], temperature: float,
              heldout_size: int, mu_in_range: float, seconds: float) -> dict:
    """The JSON report (described in docs/benchmarks.md, "Online: the earlier task's comparison of strategies")."""
    per_strategy = {
        name: {"auc": [auc(run["accuracy"]) for run in runs],
               "log_loss_auc": [auc(run["log_loss"]) for run in runs],
               "reward_auc": [auc(run["reward"]) for run in runs],
               "win_rate_auc": [auc(run["win_rate"]) for run in runs],
               "accuracy_curve_mean": [sum(run["accuracy"][r] for run in runs) / len(runs)
                                       for r in range(task.rounds + 1)]}
        for name, runs in curves.items()
    }
    comparisons = compare({name: values["auc"] for name, values in per_strategy.items()}, "random")
    secondary = compare({name: values["reward_auc"] for name, values in per_strategy.items()}, "random")
    negative_cmp = compare({"random": per_strategy["random"]["auc"],
                            "random_other_seed": [auc(run["accuracy"]) for run in negative]}, "random")
    positive_cmp = compare({"random": [run["random"] for run in positive],
                            "adpo": [run["adpo"] for run in positive]}, "random")

    def as_json(comparison: Comparison) -> dict:
        return {"vs": "random", "mean_diff": comparison.mean_diff, "ci95": list(comparison.ci95),
                "p_value": comparison.p_value, "p_holm": comparison.p_holm}

    return {
        "seeds": seeds, "rounds": task.rounds, "labels_per_round": task.labels_per_round, "task": asdict(task),
        "metric": "held-out preference accuracy of the implicit reward, mean over rounds 1..R",
        "judge_temperature": temperature, "heldout_pairs": heldout_size, "fraction_mu_in_0.2_0.8": mu_in_range,
        "strategies": per_strategy,
        "comparisons": {name: as_json(c) for name, c in comparisons.items()},
        "secondary_reward_comparisons": {name: as_json(c) for name, c in secondary.items()},
        "controls": {
            "positive": {"p_value": positive_cmp["adpo"].p_value, "mean_diff": positive_cmp["adpo"].mean_diff,
                         "ci95": list(positive_cmp["adpo"].ci95), "what": "ADPO vs random, linear BT oracle"},
            "negative": {"p_value": negative_cmp["random_other_seed"].p_value,
                         "mean_diff": negative_cmp["random_other_seed"].mean_diff,
                         "ci95": list(negative_cmp["random_other_seed"].ci95),
                         "what": "random vs random with selection seed + 1000"},
        },
        "strategies_run": strategies, "wall_time_s": seconds,
    }


def write_markdown(report: dict, command: str, path: Path) -> None:
    lines = [
        "# Online strategy benchmark", "",
        f"`{command}` — {len(report['seeds'])} seeds, {report['rounds']} rounds × {report['labels_per_round']} "
        f"labels, {report['heldout_pairs']} held-out judged pairs, judge temperature "
        f"{report['judge_temperature']:.4f} ({100 * report['fraction_mu_in_0.2_0.8']:.0f}% of held-out pairs have "
        f"P(y1≻y2) in 0.2–0.8); wall time {report['wall_time_s'] / 60:.0f} min.", "",
        "Primary: held-out preference accuracy, mean over rounds 1…R (AUC); Δ = strategy − random, per seed.",
        "", "| strategy | mean AUC | Δ vs random | 95% CI | Wilcoxon p (one-sided) | Holm p |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in report["strategies"].items():
        mean = sum(values["auc"]) / len(values["auc"])
        if name == "random":
            lines.append(f"| random | {mean:.4f} | — | — | — | — |")
            continue
        c = report["comparisons"][name]
        lines.append(f"| {name} | {mean:.4f} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                     f"{c['p_value']:.3g} | {c['p_holm']:.3g} |")
    for key in ("positive", "negative"):
        c = report["controls"][key]
        lines.append(f"| control: {key} ({c['what']}) | | {c['mean_diff']:+.4f} | "
                     f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | {c['p_value']:.3g} | |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, diffs) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [report["labels_per_round"] * r for r in range(report["rounds"] + 1)]
    for name, values in report["strategies"].items():
        curves.plot(labels, values["accuracy_curve_mean"], marker="o", label=name)
    curves.set(xlabel="labels", ylabel="held-out preference accuracy", title="mean over seeds")
    curves.legend()
    names = [name for name in report["strategies"] if name != "random"]
    for index, name in enumerate(names):
        runs = report["strategies"][name]["auc"]
        base = report["strategies"]["random"]["auc"]
        diffs.scatter([index] * len(runs), [a - b for a, b in zip(runs, base, strict=True)], alpha=0.5)
        mean, (low, high) = report["comparisons"][name]["mean_diff"], report["comparisons"][name]["ci95"]
        diffs.errorbar(index + 0.15, mean, yerr=[[mean - low], [high - mean]], fmt="ks", capsize=4)
    diffs.axhline(0.0, color="grey", lw=1)
    diffs.set_xticks(range(len(names)), names)
    diffs.set(ylabel="AUC − random's AUC (per seed; mean, 95% CI)", title="paired differences")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--quick", action="store_true", help="2 seeds of a 2-round, 16-prompt task (smoke run)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_strategies"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    task = Task(rounds=2, prompts_per_round=16, labels_per_round=8, heldout_prompts=48, eval_prompts=4) \
        if args.quick else Task()
    seeds = list(range(2 if args.quick else args.seeds))
    if "random" not in args.strategies:
        raise SystemExit("--strategies: must include random (the baseline)")
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    temperature = judge_temperature(task, args.work)
    print(f"judge temperature {temperature:.4f}", flush=True)
    jobs = [Job(task, args.work, seed, name, temperature) for seed in seeds for name in args.strategies]
    jobs += [Job(task, args.work, seed, "random", temperature, NEGATIVE_OFFSET) for seed in seeds]
    spawn = multiprocessing.get_context("spawn")  # workers start clean: no forked torch thread pools
    with ProcessPoolExecutor(args.jobs, mp_context=spawn, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        list(pool.map(seed_heldout, *zip(*[(task, args.work, seed, temperature) for seed in seeds], strict=True)))
        results = dict(zip(jobs, pool.map(run_job, jobs), strict=True))
        check_paired(task, args.work, jobs, temperature)
        positive = list(pool.map(positive_control, *zip(*[(task, args.work, seed, temperature) for seed in seeds],
                                                        strict=True)))
    curves = {name: [results[job] for job in jobs if job.strategy == name and job.offset == 0]
              for name in args.strategies}
    negative = [results[job] for job in jobs if job.offset == NEGATIVE_OFFSET]
    heldout = seed_heldout(task, args.work, seeds[0], temperature)
    mu = torch.tensor(heldout.prob_1)
    report = summarise(task, seeds, args.strategies, curves, negative, positive, temperature, len(heldout.pairs),
                       float(((mu >= 0.2) & (mu <= 0.8)).double().mean()), time.perf_counter() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "strategies.json", json.dumps(report, indent=1))
    command = "python benchmarks/strategies.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_markdown(report, command.strip(), args.out / "strategies.md")
    plot(report, args.out / "strategies.png")
    print((args.out / "strategies.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
