"""The offline benchmark's report: per-budget curves and labels-saved ratios with CIs as JSON, Markdown and PNG."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from offline_stats import (  # noqa: E402
    Interval,
    curve_intervals,
    labels_saved_interval,
    ratio_intervals,
    seed_resamples,
)

from system.fileio import atomic_output, atomic_write_text  # noqa: E402

NAME = "offline_logit_error"
LABELS = {"random": "Uniform", "adpo": "ADPO", "adpo_plus": "ADPO+", "ensemble": "Ensemble"}
ACTIVE = ("adpo", "adpo_plus", "ensemble")
GOAL_RATIO, GOAL_FROM = 1.5, 256
"""The goal for the plug-in: ADPO+'s mean logit error within 1.5x Uniform's at every budget ≥ 2^8."""
METRICS = {"max_logit_error": "max logit error", "mean_logit_error": "mean logit error", "error_rate": "error rate"}


def error_table(results: list[dict], strategy: str, metric: str, budgets: list[int]) -> np.ndarray:
    """[S, B] ``metric`` of ``strategy`` per seed (ascending) and budget."""
    seeds = sorted({row["seed"] for row in results})
    lookup = {(row["seed"], row["labels"]): row[metric] for row in results if row["strategy"] == strategy}
    return np.array([[lookup[seed, budget] for budget in budgets] for seed in seeds])


def summarise(config: dict, results: list[dict], seconds: list[dict[str, float]]) -> dict:
    """The report's JSON content: config, CPU seconds per seed, curves and ratios with 95% bootstrap CIs, every row.

    ``config`` is the run's arguments (``bootstrap`` and ``threads`` are read); ``seconds`` holds one dict per seed
    with its ``seed`` and the CPU seconds of each strategy's selection and of the ``evaluation`` fits.
    """
    budgets = sorted({row["labels"] for row in results})
    resamples = seed_resamples(len(seconds), config["bootstrap"], seed=0)
    curves: dict[str, dict] = {}
    ratios: dict[str, dict] = {strategy: {} for strategy in ACTIVE}
    relative: dict[str, list[dict]] = {}
    for metric in METRICS:
        tables = {strategy: error_table(results, strategy, metric, budgets) for strategy in LABELS}
        curves[metric] = {strategy: [asdict(point) for point in curve_intervals(table, resamples)]
                          for strategy, table in tables.items()}
        for strategy in ACTIVE:
            ratio = labels_saved_interval(np.array(budgets), tables["random"], tables[strategy], resamples)
            ratios[strategy][metric] = asdict(ratio)
        if metric == "mean_logit_error":
            relative = {strategy: [asdict(point) for point in ratio_intervals(tables[strategy], tables["random"],
                                                                               resamples)] for strategy in ACTIVE}
    return {
        "config": {key: (str(value) if isinstance(value, Path) else value) for key, value in config.items()},
        "seeds": len(seconds),
        "budgets": budgets,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {config['threads']}",
        "cpu_seconds": seconds,
        "cpu_seconds_per_seed": float(np.mean([sum(v for k, v in row.items() if k != "seed") for row in seconds])),
        "curves": curves,
        "labels_saved": ratios,
        "mean_logit_error_vs_uniform": relative,
        "results": results,
    }


def plot(report: dict, out: Path) -> None:
    """The ADPO paper's figure: one panel per metric, error vs log2(labels), mean over seeds with the 95% CI band."""
    log2 = np.log2(report["budgets"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 4))
    for axis, (metric, title) in zip(axes, METRICS.items(), strict=True):
        for strategy, label in LABELS.items():
            points = report["curves"][metric][strategy]
            axis.plot(log2, [p["value"] for p in points], marker="o", label=label)
            axis.fill_between(log2, [p["low"] for p in points], [p["high"] for p in points], alpha=0.2)
        if metric != "error_rate":
            axis.set_yscale("log")
        axis.set_xticks(log2)
        axis.set_xlabel("log2(labelled pairs)")
        axis.set_title(title)
        axis.legend()
    fig.suptitle(f"Offline logit error on digits (in the ADPO paper's spirit), pool 2^{report['config']['pool_log2']} "
                 f"(mean, 95% bootstrap CI over {report['seeds']} seeds)")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _cell(point: dict, digits: int) -> str:
    return f"{point['value']:.{digits}f} [{point['low']:.{digits}f}, {point['high']:.{digits}f}]"


def markdown(report: dict) -> str:
    """Ratios, timings and per-budget tables (mean [95% CI]) as Markdown."""
    config, budgets = report["config"], report["budgets"]
    budget_max, per_seed = budgets[-1], report["cpu_seconds_per_seed"]
    parts = [*LABELS, "evaluation"]
    lines = [
        "# Offline logit error on digits (an experiment in the ADPO paper's spirit, not a reproduction)",
        "",
        f"`python benchmarks/offline_logit_error.py --seeds {report['seeds']} --pool-log2 {config['pool_log2']} "
        f"--min-log2 {config['min_log2']} --max-log2 {config['max_log2']}` — {report['seeds']} seeds, pool "
        f"2^{config['pool_log2']} pairs, budgets 2^{config['min_log2']}…2^{config['max_log2']}, φ of dimension "
        f"{10 * (config['pca'] + 1)}, evaluated fits with ridge {config['l2']:g}; ADPO+'s plug-in fit with ridge "
        f"{config['plugin_l2']:g}, refit every {config['refit_every']} picks after {config['warm_start']} uniform "
        f"ones; the ensemble's heads refit every {config['refit_every']} picks. The ADPO paper's own experiments are "
        "CIFAR-10/100 and Nectar.",
        "",
        f"Time: {per_seed:.0f} CPU s per seed, one torch thread ("
        + ", ".join(f"{LABELS.get(part, part)} {np.mean([row[part] for row in report['cpu_seconds']]):.0f} s"
                    for part in parts)
        + f"), so {report['seeds']} seeds take about {report['seeds'] * per_seed / 60:.0f} CPU min "
        "(CPU time: the box was shared, and wall time there depended on the other jobs).",
        "",
        f"## Labels saved: labels Uniform needs for its error at {budget_max} ÷ labels a strategy needs for it",
        "",
        "| metric | " + " | ".join(f"{LABELS[strategy]} [95% CI]" for strategy in ACTIVE) + " |",
        "|---" * (len(ACTIVE) + 1) + "|",
    ]
    for metric, title in METRICS.items():
        cells = [Interval(**report["labels_saved"][strategy][metric]) for strategy in ACTIVE]
        lines.append(f"| {title} | " + " | ".join(f"{c.value:.2f}x [{c.low:.2f}, {c.high:.2f}]" for c in cells) + " |")
    lines += ["", f"Paired seed bootstrap. A ratio of {budget_max / budgets[0]:.0f}x means the strategy reached the "
              "target at the smallest budget (a lower bound); 0 means it never reached it.", "",
              "## Mean logit error ÷ Uniform's, per budget (mean [95% CI])", "",
              f"Goal for ADPO+: ≤ {GOAL_RATIO}x at every budget ≥ {GOAL_FROM}.", "",
              "| labels | " + " | ".join(LABELS[strategy] for strategy in ACTIVE) + " |",
              "|---" * (len(ACTIVE) + 1) + "|"]
    for j, budget in enumerate(budgets):
        cells = [_cell(report["mean_logit_error_vs_uniform"][strategy][j], 2) for strategy in ACTIVE]
        lines.append(f"| 2^{int(np.log2(budget))} | " + " | ".join(cells) + " |")
    lines.append("")
    for metric, title in METRICS.items():
        digits = 4 if metric == "error_rate" else 3
        lines += [f"## {title} (mean [95% CI])", "", "| labels | " + " | ".join(LABELS.values()) + " |",
                  "|---" * (len(LABELS) + 1) + "|"]
        for j, budget in enumerate(budgets):
            cells = [_cell(report["curves"][metric][strategy][j], digits) for strategy in LABELS]
            lines.append(f"| 2^{int(np.log2(budget))} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"![offline logit error]({NAME}.png)")
    return "\n".join(lines) + "\n"


def write_report(config: dict, results: list[dict], seconds: list[dict[str, float]]) -> dict:
    """Write ``NAME.{json,md,png}`` under ``config["out"]``; returns the JSON content."""
    report = summarise(config, results, seconds)
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{NAME}.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / f"{NAME}.md", markdown(report))
    plot(report, out / f"{NAME}.png")
    for strategy in ACTIVE:
        ratio = report["labels_saved"][strategy]
        print(f"labels saved by {LABELS[strategy]}: " + ", ".join(
            f"{METRICS[m]} {r['value']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]" for m, r in ratio.items()), flush=True)
    return report


def merge_reports(paths: list[Path], out: Path) -> dict:
    """One report from the JSON files of runs over disjoint seeds with otherwise equal settings.

    Raises:
        ValueError: the runs' settings differ (other than seeds and output folder) or a seed repeats.
    """
    parts = [json.loads(path.read_text()) for path in paths]
    varying = {"seeds", "first_seed", "out", "merge"}
    settings = [{k: v for k, v in part["config"].items() if k not in varying} for part in parts]
    if any(setting != settings[0] for setting in settings):
        raise ValueError(f"cannot merge runs with different settings: {paths}")
    seconds = [row for part in parts for row in part["cpu_seconds"]]
    if len({row["seed"] for row in seconds}) != len(seconds):
        raise ValueError(f"a seed repeats across {paths}")
    config = dict(parts[0]["config"], seeds=len(seconds), first_seed=min(int(row["seed"]) for row in seconds),
                  out=str(out), merge=None)
    return write_report(config, [row for part in parts for row in part["results"]], seconds)
