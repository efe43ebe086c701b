"""Does the loop learn from its labels? Random selection only, on the strategy benchmark's task, per seed.

Each seed runs the task (:mod:`benchmarks.strategy_task`, the product's loop on the in-process parts) twice
with the random strategy: selection seed = seed (the curve) and seed + 1000 (the negative control: the same
prompts, pools of round 1, training and evaluation seeds, other picks). No active strategy runs here.

Per run and round r = 0 … R (round 0 = πref, untrained) it records the implicit reward's held-out log-loss
and accuracy against the judge's P, and the judge reward and win-rate of the policy's generations. The report
takes the held-out log-loss as primary (lower is better) and gives, over seeds s:

- ``gain`` = mean_s [L_s(1) − L_s(R)]: first trained round minus last (the improvement, > 0 when it learns);
- ``noise_sd`` = SD_s [L_s(R) − L'_s(R)]: last round of the run minus the negative control's (sample SD), and
  ``auc_noise_sd`` the same for the mean over rounds 1 … R (what the strategy comparison's power rests on);
- ``ratio`` = gain / noise_sd (the target is ≥ 3), and whether the mean curve ends at or below its middle
  round ⌈R/2⌉ (it must not end above it, i.e. worse);
- per round, the mean over seeds and a percentile seed-bootstrap 95% CI of every score.

    .venv/bin/python benchmarks/pilot_random.py --first-seed 0 --seeds 5     # seeds 0-4, one after another
    .venv/bin/python benchmarks/pilot_random.py --first-seed 5 --seeds 5     # seeds 5-9 (another process)
    .venv/bin/python benchmarks/pilot_random.py --merge                      # one report from every seed done

Runs are kept under ``--work`` (reused when rerun, so an interrupted sweep continues); ``--merge`` writes
``pilot_random.json`` and ``pilot_random.md`` to ``--out`` from every finished seed found there.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paired_stats import bootstrap_mean_ci  # noqa: E402
from benchmarks.strategies import NEGATIVE_OFFSET, Job, run_job  # noqa: E402
from benchmarks.strategy_task import PRIMARY, SCORES, Task, better_drop, judge_temperature, task_config  # noqa: E402
from system.fileio import atomic_write_text  # noqa: E402


def run_seed(task: Task, workdir: Path, seed: int) -> dict:
    """Both random runs of ``seed`` (reused when done), with their wall time; written to ``seed_<seed>/pilot.json``."""
    path = workdir / f"seed_{seed}" / "pilot.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    temperature = judge_temperature(task, workdir)
    runs = {}
    for offset in (0, NEGATIVE_OFFSET):
        started = time.perf_counter()
        curves = run_job(Job(task, workdir, seed, "random", temperature, offset))
        runs[str(offset)] = {"curves": curves, "wall_time_s": time.perf_counter() - started}
    result = {"seed": seed, "temperature": temperature, "task": asdict(task), "runs": runs}
    atomic_write_text(path, json.dumps(result))
    return result


def summarise(results: list[dict], config: dict) -> dict:
    """The pilot report (module docstring) from per-seed results, all of one task and temperature."""
    seeds = [result["seed"] for result in results]
    rounds = results[0]["task"]["rounds"]
    middle = math.ceil(rounds / 2)
    curves = [result["runs"]["0"]["curves"] for result in results]
    controls = [result["runs"][str(NEGATIVE_OFFSET)]["curves"] for result in results]
    per_round = {}
    for name in SCORES:
        means, cis = [], []
        for r in range(rounds + 1):
            values = [curve[name][r] for curve in curves]
            means.append(statistics.fmean(values))
            cis.append(list(bootstrap_mean_ci(values)))
        per_round[name] = {"mean": means, "ci95": cis, "negative_control_mean": [
            statistics.fmean(curve[name][r] for curve in controls) for r in range(rounds + 1)]}
    learning = {}
    for name, higher in SCORES.items():
        gains = [better_drop(curve[name][1], curve[name][rounds], higher) for curve in curves]
        noise = [curve[name][rounds] - control[name][rounds] for curve, control in zip(curves, controls, strict=True)]
        noise_sd = statistics.stdev(noise) if len(noise) > 1 else float("nan")
        auc_noise = [statistics.fmean(curve[name][1:]) - statistics.fmean(control[name][1:])
                     for curve, control in zip(curves, controls, strict=True)]
        gain = statistics.fmean(gains)
        mean = per_round[name]["mean"]
        learning[name] = {
            "gain": gain, "gain_ci95": list(bootstrap_mean_ci(gains)), "noise_sd": noise_sd,
            "ratio": gain / noise_sd if noise_sd > 0 else float("nan"),
            "auc_noise_sd": statistics.stdev(auc_noise) if len(auc_noise) > 1 else float("nan"),
            "ends_at_or_beyond_middle": better_drop(mean[middle], mean[rounds], higher) >= 0,
            "higher_is_better": higher,
        }
    wall = [run["wall_time_s"] for result in results for run in result["runs"].values()]
    primary = learning[PRIMARY]
    return {
        "seeds": seeds, "task": results[0]["task"], "config": config,
        "judge_temperature": results[0]["temperature"],
        "labels": curves[0]["labels"],
        "primary_metric": {"name": PRIMARY, "higher_is_better": SCORES[PRIMARY]},
        "learning": learning, "per_round": per_round,
        "per_seed": {name: [curve[name] for curve in curves] for name in SCORES},
        "negative_control_per_seed": {name: [curve[name] for curve in controls] for name in SCORES},
        "wall_time_s_per_run": {"mean": statistics.fmean(wall), "max": max(wall)},
        "power": power_analysis(curves[0]["labels"][1:], per_round[PRIMARY]["mean"][1:], primary["auc_noise_sd"],
                                primary["higher_is_better"]),
    }


HOLM_STRATEGIES = 5
"""Active strategies a comparison corrects over (Holm): the smallest p-value is held to α / 5."""


def power_analysis(labels: list[float], curve: list[float], noise_sd: float, higher_is_better: bool,
                   alpha: float = 0.05, power: float = 0.8) -> dict:
    """What a paired comparison on the mean over rounds 1 … R can detect, from the pilot's variance.

    The per-seed difference of two strategies' scores has SD σ ≈ ``noise_sd`` (random vs random). A one-sided
    paired test at level α' = α / :data:`HOLM_STRATEGIES` (Holm's bound for the smallest p-value) with power
    1 − β detects, with n seeds, δ(n) = (z_{1−α'} + z_{1−β}) · σ / √n (normal approximation; the Wilcoxon
    signed-rank test's efficiency against it is 3/π ≈ 0.955, so its δ is ≈ 2% larger).

    To read δ in labels: random's mean curve over labels n_1 … n_R is fitted by a power law
    score(n) = a · n^b (least squares in log-log), and a strategy that needs k times fewer labels scores
    score(k · n_r) in round r; its advantage on the mean over rounds is mean_r |score(k·n_r) − score(n_r)|.
    Returns δ for 10 and 20 seeds, the label saving k whose advantage equals each δ, the advantage of
    k = 1.25, 1.5 and 2, and the fit.
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / HOLM_STRATEGIES) + NormalDist().inv_cdf(power)
    x, y = np.log(np.asarray(labels, dtype=np.float64)), np.log(np.asarray(curve, dtype=np.float64))
    slope, intercept = np.polyfit(x, y, 1)

    def fitted(n: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(intercept + slope * np.log(n)))

    budgets = np.asarray(labels, dtype=np.float64)

    def ahead(k: float) -> float:
        return float(np.mean(np.abs(fitted(k * budgets) - fitted(budgets))))

    def saving_seen(delta: float) -> float:
        """The k with ahead(k) = δ (ahead grows with k): bisection on log k in [0, log 1000]."""
        low, high = 0.0, math.log(1000.0)
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if ahead(math.exp(middle)) < delta else (low, middle)
        return math.exp((low + high) / 2)

    detectable = {str(n): z * noise_sd / math.sqrt(n) for n in (10, 20)}
    return {"alpha": alpha, "holm_strategies": HOLM_STRATEGIES, "power": power, "noise_sd": noise_sd,
            "detectable": detectable,
            "detectable_labels_saved": {n: saving_seen(delta) for n, delta in detectable.items()},
            "fit": {"a": float(math.exp(intercept)), "b": float(slope)},
            "advantage_of_labels_saved": {str(k): ahead(k) for k in (1.25, 1.5, 2.0)},
            "higher_is_better": higher_is_better}


DIAGNOSIS = "\n## Diagnosis"
"""Where the hand-written part of ``pilot_random.md`` starts; ``--merge`` keeps it as it is."""


def write_markdown(report: dict, path: Path) -> None:
    """The pilot's tables at the top of ``path``, followed by its hand-written diagnosis (kept from the
    existing file: everything from :data:`DIAGNOSIS` on)."""
    labels = report["labels"]
    learning = report["learning"]
    kept = path.read_text() if path.exists() else ""
    lines = [
        "# Pilot: does random's policy learn from its labels?", "",
        "Generated by `benchmarks/pilot_random.py --merge` (the tables); the diagnosis below is written by hand.", "",
        f"{len(report['seeds'])} seeds; {report['task']['rounds']} rounds × {report['task']['labels_per_round']} "
        f"labels; judge temperature {report['judge_temperature']:.4f}; "
        f"{report['wall_time_s_per_run']['mean'] / 60:.1f} min per run on average (two runs per seed).", "",
        "| score | better | gain: round 1 → last (95% CI) | noise SD (random vs random, last round) | gain / SD "
        "| ends at or beyond its middle | noise SD of the mean over rounds 1…R |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in learning.items():
        low, high = values["gain_ci95"]
        lines.append(f"| {name}{' (primary)' if name == report['primary_metric']['name'] else ''} | "
                     f"{'higher' if values['higher_is_better'] else 'lower'} | {values['gain']:+.4f} "
                     f"[{low:+.4f}, {high:+.4f}] | {values['noise_sd']:.4f} | {values['ratio']:.1f} | "
                     f"{'yes' if values['ends_at_or_beyond_middle'] else 'no'} | {values['auc_noise_sd']:.4f} |")
    power = report["power"]
    lines += ["", f"Power of a paired comparison on the mean over rounds 1…R (one-sided, α = {power['alpha']} / "
              f"{power['holm_strategies']} strategies, power {power['power']}, σ = {power['noise_sd']:.4f}): "
              "smallest detectable difference " + ", ".join(f"{value:.4f} with {n} seeds" for n, value in
                                                             power["detectable"].items()) +
              f". On random's fitted curve ({power['fit']['a']:.3f} · n^{power['fit']['b']:.4f}) a strategy needing "
              "k times fewer labels is ahead by " + ", ".join(f"{value:.4f} (k = {k})" for k, value in
                                                             power["advantage_of_labels_saved"].items()) +
              "; the smallest detectable difference is the advantage of k = " + ", ".join(
                  f"{k_seen:.1f} with {n} seeds" for n, k_seen in power["detectable_labels_saved"].items()) + "."]
    lines += ["", "Per round, mean over seeds [95% seed-bootstrap CI]:", "",
              "| round | labels | " + " | ".join(report["per_round"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in report["per_round"]) + " |"]
    for r, count in enumerate(labels):
        cells = [f"{values['mean'][r]:.4f} [{values['ci95'][r][0]:.4f}, {values['ci95'][r][1]:.4f}]"
                 for values in report["per_round"].values()]
        lines.append(f"| {r} | {int(count)} | " + " | ".join(cells) + " |")
    diagnosis = kept[kept.index(DIAGNOSIS):] if DIAGNOSIS in kept else ""
    atomic_write_text(path, "\n".join(lines) + "\n" + diagnosis)


def run_config(task: Task, workdir: Path) -> dict:
    """The settings that define the pilot beyond the task's sizes (the loop's config of seed 0)."""
    config = task_config(task, workdir, 0, "random", judge_temperature(task, workdir))
    return {"model.tiny": config.model.tiny.model_dump(), "lora": config.lora.model_dump(),
            "train": {key: value for key, value in config.train.model_dump().items() if key != "deepspeed"},
            "generation": config.generation.model_dump(include={"temperature", "top_p", "max_new_tokens"}),
            "loop.eval_samples_per_prompt": config.loop.eval_samples_per_prompt}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--merge", action="store_true", help="no run: one report from every seed done in --work")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--work", type=Path, default=Path("runs/pilot_random"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    task = Task()
    if not args.merge:
        torch.set_num_threads(args.threads)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            result = run_seed(task, args.work, seed)
            curve = result["runs"]["0"]["curves"][PRIMARY]
            print(f"seed {seed}: {PRIMARY} " + " ".join(f"{value:.4f}" for value in curve), flush=True)
        return {}
    results = sorted((json.loads(path.read_text()) for path in args.work.glob("seed_*/pilot.json")),
                     key=lambda result: result["seed"])
    if not results:
        raise SystemExit(f"--merge: no finished seed under {args.work}")
    report = summarise(results, run_config(task, args.work))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "pilot_random.json", json.dumps(report, indent=1))
    write_markdown(report, args.out / "pilot_random.md")
    print((args.out / "pilot_random.md").read_text())
    return report


if __name__ == "__main__":
    main()
