"""Does active selection save labels online? Every offered strategy against random, paired, over many seeds.

The comparison pre-registered in ``benchmarks/results/strategies_plan.md`` (written before any active strategy ran
on this task), on the task of :mod:`benchmarks.strategy_task` (the one the random-only pilot,
``benchmarks/pilot_random.py``, showed learning on): 8 rounds × 48 Bradley–Terry labels from the MiniLM judge,
40 fresh prompts × 8 responses a round (1,120 candidate pairs), DPO with LoRA — through
:class:`~system.loop.ActiveLoop` on the in-process parts (the product's code, no Ray). Each seed runs, on the same
prompts, round-1 pool and training, oracle and evaluation seeds:

- every strategy of :data:`STRATEGIES` (random is the baseline);
- the negative control: random again with selection seed + :data:`NEGATIVE_OFFSET`;
- APO's control: random selecting from the fixed round-1 pool (``loop.fixed_pool``), as APO does;
- the positive control: :data:`POSITIVE` and random with the teacher oracle of
  :mod:`benchmarks.teacher_oracle` (preferences the learner can represent exactly), scored against the teacher.

Primary score per run: the implicit reward's held-out log-loss against the oracle's P, averaged over rounds 1 … R
(lower is better). Each strategy is compared with random on the per-seed differences d_s = score_random −
score_strategy (> 0: the strategy is better): mean, percentile-bootstrap 95% CI, one-sided Wilcoxon signed-rank
p-value (H1: d > 0) and Holm's correction over the strategies. Labels saved: labels random spends for its
last-round mean score ÷ labels the strategy needs for it on its mean curve (linear in log n between
rounds), with a paired seed-bootstrap CI.

    .venv/bin/python benchmarks/strategies.py --first-seed 100 --seeds 5   # seeds 100-104, one after another
    .venv/bin/python benchmarks/strategies.py --first-seed 105 --seeds 5   # seeds 105-109 (another process)
    .venv/bin/python benchmarks/strategies.py --merge                      # one report from every seed done
    .venv/bin/python benchmarks/strategies.py --quick                      # a 2-seed smoke run of a tiny task

Finished runs are kept under ``--work`` and reused, so an interrupted sweep continues where it stopped; ``--merge``
writes ``strategies.{json,md,png}`` to ``--out`` from every finished seed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.offline_stats import Interval, percentile_interval, seed_resamples  # noqa: E402
from benchmarks.paired_stats import Comparison, compare  # noqa: E402
from benchmarks.strategy_task import (  # noqa: E402
    PRIMARY,
    SCORE_MEANINGS,
    SCORES,
    HeldOut,
    Task,
    better_drop,
    calibrate_rewards,
    heldout_pairs,
    judge_temperature,
    round_one_pool,
    run_strategy,
    task_config,
    task_prompts,
    write_task_prompts,
)
from benchmarks.teacher_oracle import TeacherOracle, teacher_adapter  # noqa: E402
from system.fileio import atomic_write_text  # noqa: E402
from system.local_parts import LocalPolicy  # noqa: E402
from system.types import CandidatePair  # noqa: E402

STRATEGIES = ("random", "activedpo", "adpo", "adpo_plus", "apo", "ensemble")
NEGATIVE_OFFSET = 1000
"""Selection-seed shift of the negative control's second random run."""
POSITIVE = "activedpo"
"""The strategy of the positive control: its features are the gradient of the very implicit reward the teacher is."""
FIXED_POOL, TEACHER = "fixed_pool", "teacher"
"""The controls' run variants: random from round 1's pool; the teacher oracle."""


@dataclass(frozen=True)
class Job:
    """One run of the task: (seed, strategy, selection-seed offset) and the control variant ("" for none)."""

    task: Task
    workdir: Path
    seed: int
    strategy: str
    temperature: float
    offset: int = 0
    variant: str = ""

    @property
    def name(self) -> str:
        return f"{self.strategy}+{self.offset}" + (f"@{self.variant}" if self.variant else "")

    @property
    def result_path(self) -> Path:
        return self.workdir / f"seed_{self.seed}" / f"{self.name}.json"


def seed_jobs(task: Task, workdir: Path, seed: int, temperature: float, strategies: tuple[str, ...]) -> list[Job]:
    """Every run of ``seed``: the strategies, then the negative, APO's and the positive control."""
    jobs = [Job(task, workdir, seed, name, temperature) for name in strategies]
    jobs.append(Job(task, workdir, seed, "random", temperature, NEGATIVE_OFFSET))
    jobs.append(Job(task, workdir, seed, "random", temperature, variant=FIXED_POOL))
    jobs += [Job(task, workdir, seed, name, temperature, variant=TEACHER) for name in ("random", POSITIVE)]
    return jobs


def run_job(job: Job) -> dict[str, list[float]]:
    """Run ``job`` (or read its result from an earlier sweep)."""
    if job.result_path.exists():
        return dict(json.loads(job.result_path.read_text()))
    overrides = [f"loop.run_dir={job.result_path.with_suffix('')}"]
    if job.variant == FIXED_POOL:
        overrides.append("loop.fixed_pool=true")
    config = task_config(job.task, job.workdir, job.seed, job.strategy, job.temperature, job.offset, overrides)
    heldout = seed_heldout(job.task, job.workdir, job.seed, job.temperature)
    oracle = None
    if job.variant == TEACHER:
        teacher_temp = teacher_temperature(job.task, job.workdir, job.temperature)
        oracle = TeacherOracle(config, teacher_adapter_of(job.task, job.workdir, job.temperature), teacher_temp,
                               seed=job.seed)
        heldout = HeldOut(heldout.pairs, [label.prob_1 for label in oracle.label(heldout.pairs)])
    curves = run_strategy(config, heldout, oracle)
    atomic_write_text(job.result_path, json.dumps(curves))
    return curves


def seed_heldout(task: Task, workdir: Path, seed: int, temperature: float) -> HeldOut:
    """The seed's fixed held-out pairs, generated once and cached under ``workdir``."""
    path = workdir / f"seed_{seed}" / "heldout.json"
    if path.exists():
        saved = json.loads(path.read_text())
        return HeldOut([CandidatePair(**pair) for pair in saved["pairs"]], list(saved["prob_1"]))
    config = task_config(task, workdir, seed, "random", temperature)
    heldout = heldout_pairs(config, write_task_prompts(task, workdir), LocalPolicy(config))
    atomic_write_text(path, json.dumps({"pairs": [asdict(pair) for pair in heldout.pairs], "prob_1": heldout.prob_1}))
    return heldout


def teacher_adapter_of(task: Task, workdir: Path, temperature: float) -> Path:
    """The positive control's θ* (trained once per ``workdir`` on training prompts the task's runs do not hold out)."""
    config = task_config(task, workdir, 0, "random", temperature)
    train, _, _ = task_prompts(task.heldout_prompts, task.eval_prompts)
    return teacher_adapter(config, train[-160:], workdir)


def teacher_temperature(task: Task, workdir: Path, temperature: float) -> float:
    """T* of the teacher oracle: :func:`calibrate_rewards` on seed 0's held-out pairs, cached in ``workdir``."""
    path = workdir / "teacher_temperature.json"
    if not path.exists():
        config = task_config(task, workdir, 0, "random", temperature)
        heldout = seed_heldout(task, workdir, 0, temperature)
        teacher = TeacherOracle(config, teacher_adapter_of(task, workdir, temperature))
        atomic_write_text(path, json.dumps({"temperature": calibrate_rewards(teacher, heldout.pairs)}))
    return float(json.loads(path.read_text())["temperature"])


def check_paired(jobs: list[Job]) -> None:
    """Every run of a seed saw the same round-1 pool; raises when the comparison would not be paired."""
    pools = {round_one_pool(job.result_path.with_suffix("")) for job in jobs}
    if len(pools) != 1:
        raise RuntimeError(f"seed {jobs[0].seed}: runs saw different round-1 pools; the comparison is not paired")


def run_seed(task: Task, workdir: Path, seed: int, strategies: tuple[str, ...]) -> dict:
    """Every run of ``seed`` (reused when done), checked paired; written to ``seed_<seed>/result.json``."""
    path = workdir / f"seed_{seed}" / "result.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    temperature = judge_temperature(task, workdir)
    jobs = seed_jobs(task, workdir, seed, temperature, strategies)
    runs = {}
    for job in jobs:
        started = time.perf_counter()
        runs[job.name] = {"curves": run_job(job), "wall_time_s": time.perf_counter() - started}
        print(f"seed {seed} {job.name}: {PRIMARY} " + " ".join(f"{v:.4f}" for v in runs[job.name]["curves"][PRIMARY]),
              flush=True)
    check_paired(jobs)
    result = {"seed": seed, "task": asdict(task), "temperature": temperature,
              "teacher_temperature": teacher_temperature(task, workdir, temperature), "strategies": list(strategies),
              "runs": runs}
    atomic_write_text(path, json.dumps(result))
    return result


def auc(curve: list[float]) -> float:
    """A per-round curve's mean over rounds 1 … R (round 0, πref, is shared by every run)."""
    return statistics.fmean(curve[1:])


def goodness(values: list[float], higher_is_better: bool) -> list[float]:
    """Scores turned so that higher is better (the paired statistics test d > 0)."""
    return values if higher_is_better else [-value for value in values]


def labels_to_reach(budgets: np.ndarray, curve: np.ndarray, target: float, higher_is_better: bool) -> float:
    """Labels at which a mean curve [R] over ``budgets`` [R] first reaches ``target``, interpolated linearly in
    (log n, score) between the two rounds around the crossing; ``budgets[0]`` when round 1 already reaches it
    (a lower bound), inf when no round does."""
    reached = curve >= target if higher_is_better else curve <= target
    if not reached.any():
        return math.inf
    j = int(np.argmax(reached))
    if j == 0:
        return float(budgets[0])
    fraction = (target - curve[j - 1]) / (curve[j] - curve[j - 1])
    return float(np.exp(np.log(budgets[j - 1]) + fraction * (np.log(budgets[j]) - np.log(budgets[j - 1]))))


def labels_saved(budgets: np.ndarray, random: np.ndarray, strategy: np.ndarray, higher_is_better: bool,
                 resamples: np.ndarray) -> Interval:
    """n_R / n*: the labels random spends for its last-round mean score ÷ the labels the strategy's mean curve
    needs to reach it (:func:`labels_to_reach`; 0 when it never does), from per-seed curves [S, R] of both; the
    interval resamples seeds with replacement (``resamples`` [D, S], the same draw for both: paired)."""

    def ratio(rows: np.ndarray) -> float:
        random_mean = random[rows].mean(axis=0)
        return float(budgets[-1]) / labels_to_reach(budgets, strategy[rows].mean(axis=0), float(random_mean[-1]),
                                                    higher_is_better)

    return percentile_interval(ratio(np.arange(len(random))), np.array([ratio(rows) for rows in resamples]))


def comparison_json(comparison: Comparison, vs: str) -> dict:
    return {"vs": vs, "mean_diff": comparison.mean_diff, "ci95": list(comparison.ci95),
            "p_value": comparison.p_value, "p_holm": comparison.p_holm}


def summarise(results: list[dict]) -> dict:
    """The JSON report (schema in ``docs/benchmarks.md``) from per-seed results of one task."""
    strategies = results[0]["strategies"]
    rounds, per_round_labels = results[0]["task"]["rounds"], results[0]["task"]["labels_per_round"]
    higher = SCORES[PRIMARY]

    def curves_of(name: str) -> list[dict[str, list[float]]]:
        return [result["runs"][name]["curves"] for result in results]

    def aucs(name: str, score: str = PRIMARY) -> list[float]:
        return [auc(curve[score]) for curve in curves_of(name)]

    names = {name: f"{name}+0" for name in strategies}
    per_strategy = {
        name: {"primary_auc": aucs(run),
               "primary_curve_mean": np.mean([c[PRIMARY] for c in curves_of(run)], 0).tolist(),
               "curves_mean": {score: np.mean([c[score] for c in curves_of(run)], 0).tolist() for score in SCORES},
               "auc": {score: aucs(run, score) for score in SCORES}}
        for name, run in names.items()
    }
    comparisons = compare({name: goodness(values["primary_auc"], higher) for name, values in per_strategy.items()},
                          "random")
    secondary = {score: {name: comparison_json(c, "random") for name, c in compare(
        {name: goodness(values["auc"][score], SCORES[score]) for name, values in per_strategy.items()},
        "random").items()} for score in SCORES if score != PRIMARY}

    def control(test: str, base: str, what: str) -> dict:
        result = compare({"base": goodness(aucs(base), higher), "test": goodness(aucs(test), higher)}, "base")["test"]
        return {**comparison_json(result, base), "what": what}

    controls = {
        "negative": control(f"random+{NEGATIVE_OFFSET}", "random+0", "random vs random, selection seed + 1000"),
        "positive": control(f"{POSITIVE}+0@{TEACHER}", f"random+0@{TEACHER}",
                            f"{POSITIVE} vs random, teacher oracle the learner can represent"),
        "fixed_pool": control(f"random+0@{FIXED_POOL}", "random+0", "random from the fixed round-1 pool vs random"),
    }
    if "apo" in strategies:
        controls["apo_vs_fixed_pool_random"] = control("apo+0", f"random+0@{FIXED_POOL}",
                                                       "apo vs random from the same fixed round-1 pool")
    budgets = np.array([per_round_labels * r for r in range(1, rounds + 1)], dtype=np.float64)
    resamples = seed_resamples(len(results), 2000, 0)

    def primary_matrix(run: str) -> np.ndarray:
        return np.array([curve[PRIMARY][1:] for curve in curves_of(run)], dtype=np.float64)

    saved = {}
    for name, run in names.items():
        if name == "random":
            continue
        interval = labels_saved(budgets, primary_matrix("random+0"), primary_matrix(run), higher, resamples)
        saved[name] = {"ratio": interval.value, "ci95": [interval.low, interval.high]}
    random_curves = curves_of("random+0")
    gains = [better_drop(curve[PRIMARY][1], curve[PRIMARY][rounds], higher) for curve in random_curves]
    noise = [a[PRIMARY][rounds] - b[PRIMARY][rounds]
             for a, b in zip(random_curves, curves_of(f"random+{NEGATIVE_OFFSET}"), strict=True)]
    wall = [run["wall_time_s"] for result in results for run in result["runs"].values()]
    return {
        "seeds": [result["seed"] for result in results], "task": results[0]["task"], "rounds": rounds,
        "labels_per_round": per_round_labels, "judge_temperature": results[0]["temperature"],
        "teacher_temperature": results[0]["teacher_temperature"],
        "primary_metric": {"name": PRIMARY, "higher_is_better": higher,
                           "aggregate": f"mean over rounds 1..R of {SCORE_MEANINGS[PRIMARY]}"},
        "strategies": per_strategy,
        "comparisons": {name: comparison_json(c, "random") for name, c in comparisons.items()},
        "secondary_comparisons": secondary, "controls": controls, "labels_saved": saved,
        "learning": {"gain": statistics.fmean(gains), "noise_sd": statistics.stdev(noise) if len(noise) > 1 else 0.0},
        "wall_time_s_per_run": {"mean": statistics.fmean(wall), "max": max(wall), "runs": len(wall)},
    }


def write_markdown(report: dict, path: Path) -> None:
    primary = report["primary_metric"]
    lines = [
        "# Online strategy comparison", "",
        "Generated by `benchmarks/strategies.py --merge`; the plan it follows is "
        "[strategies_plan.md](strategies_plan.md).", "",
        f"{len(report['seeds'])} seeds ({report['seeds'][0]}–{report['seeds'][-1]}), {report['rounds']} rounds × "
        f"{report['labels_per_round']} labels; judge temperature {report['judge_temperature']:.4f}, teacher "
        f"temperature {report['teacher_temperature']:.4f}; {report['wall_time_s_per_run']['runs']} runs, "
        f"{report['wall_time_s_per_run']['mean'] / 60:.1f} min each on average.", "",
        f"Primary: {primary['aggregate']} ({'higher' if primary['higher_is_better'] else 'lower'} is better). "
        "Δ = how much better than random, per seed (> 0: better); labels saved = labels random needs for its "
        "last-round value ÷ labels the strategy needs (0: not reached within the budget).", "",
        "| strategy | primary (mean) | Δ vs random | 95% CI | Wilcoxon p (one-sided) | Holm p "
        "| labels saved [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, values in report["strategies"].items():
        mean = statistics.fmean(values["primary_auc"])
        if name == "random":
            lines.append(f"| random | {mean:.4f} | — | — | — | — | — |")
            continue
        c, s = report["comparisons"][name], report["labels_saved"][name]
        lines.append(f"| {name} | {mean:.4f} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                     f"{c['p_value']:.3g} | {c['p_holm']:.3g} | {s['ratio']:.2f} [{s['ci95'][0]:.2f}, "
                     f"{s['ci95'][1]:.2f}] |")
    lines += ["", "Controls (same primary score, paired per seed):", "",
              "| control | Δ | 95% CI | Wilcoxon p (one-sided) |", "| --- | --- | --- | --- |"]
    for c in report["controls"].values():
        lines.append(f"| {c['what']} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                     f"{c['p_value']:.3g} |")
    lines += ["", "Secondary scores (mean over rounds 1…R; Δ > 0: better than random):", "",
              "| score | strategy | Δ vs random | 95% CI | Wilcoxon p | Holm p |",
              "| --- | --- | --- | --- | --- | --- |"]
    for score, rows in report["secondary_comparisons"].items():
        for name, c in rows.items():
            lines.append(f"| {score} | {name} | {c['mean_diff']:+.4f} | [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] | "
                         f"{c['p_value']:.3g} | {c['p_holm']:.3g} |")
    lines += ["", f"Per round, mean over seeds of the primary score ({primary['name']}):", "",
              "| round | labels | " + " | ".join(report["strategies"]) + " |",
              "| --- | --- | " + " | ".join("---" for _ in report["strategies"]) + " |"]
    for r in range(report["rounds"] + 1):
        lines.append(f"| {r} | {r * report['labels_per_round']} | " + " | ".join(
            f"{values['primary_curve_mean'][r]:.4f}" for values in report["strategies"].values()) + " |")
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, diffs) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [report["labels_per_round"] * r for r in range(report["rounds"] + 1)]
    for name, values in report["strategies"].items():
        curves.plot(labels[1:], values["primary_curve_mean"][1:], marker="o", label=name)
    curves.set(xlabel="labels", ylabel=f"held-out {report['primary_metric']['name']}", title="mean over seeds")
    curves.legend()
    names = [name for name in report["strategies"] if name != "random"]
    sign = 1.0 if report["primary_metric"]["higher_is_better"] else -1.0
    for index, name in enumerate(names):
        base = report["strategies"]["random"]["primary_auc"]
        runs = report["strategies"][name]["primary_auc"]
        diffs.scatter([index] * len(runs), [sign * (a - b) for a, b in zip(runs, base, strict=True)], alpha=0.5)
        mean, (low, high) = report["comparisons"][name]["mean_diff"], report["comparisons"][name]["ci95"]
        diffs.errorbar(index + 0.15, mean, yerr=[[mean - low], [high - mean]], fmt="ks", capsize=4)
    diffs.axhline(0.0, color="grey", lw=1)
    diffs.set_xticks(range(len(names)), names)
    diffs.set(ylabel="better than random, per seed (mean, 95% CI)", title="paired differences")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


QUICK = Task(rounds=2, prompts_per_round=16, labels_per_round=8, heldout_prompts=12, eval_prompts=4)
"""``--quick``: a task small enough for a smoke run."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=100, help="run seeds first-seed … first-seed + seeds − 1")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--merge", action="store_true", help="no run: one report from every seed done in --work")
    parser.add_argument("--quick", action="store_true", help="2 seeds of a 2-round, 16-prompt task, then --merge")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of this process")
    parser.add_argument("--work", type=Path, default=Path("runs/bench_strategies"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    if "random" not in args.strategies:
        raise SystemExit("--strategies: must include random (the baseline)")
    task = QUICK if args.quick else Task()
    if not args.merge:
        torch.set_num_threads(args.threads)
        for seed in range(args.first_seed, args.first_seed + (2 if args.quick else args.seeds)):
            run_seed(task, args.work, seed, tuple(args.strategies))
        if not args.quick:
            return 0
    results = sorted((json.loads(path.read_text()) for path in args.work.glob("seed_*/result.json")),
                     key=lambda result: result["seed"])
    if not results:
        raise SystemExit(f"--merge: no finished seed under {args.work}")
    report = summarise(results)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "strategies.json", json.dumps(report, indent=1))
    write_markdown(report, args.out / "strategies.md")
    plot(report, args.out / "strategies.png")
    print((args.out / "strategies.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
