"""The offline benchmark's report: per-budget curves and labels-saved ratios with CIs as JSON, Markdown and PNG."""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from offline_stats import Interval, curve_intervals, labels_saved_interval, seed_resamples  # noqa: E402

from system.fileio import atomic_output, atomic_write_text  # noqa: E402

NAME = "offline_logit_error"
LABELS = {"random": "Uniform", "adpo": "ADPO", "adpo_plus": "ADPO+"}
METRICS = {"max_logit_error": "max logit error", "mean_logit_error": "mean logit error", "error_rate": "error rate"}


def error_table(results: list[dict], strategy: str, metric: str, budgets: list[int]) -> np.ndarray:
    """[S, B] ``metric`` of ``strategy`` per seed (ascending) and budget."""
    seeds = sorted({row["seed"] for row in results})
    lookup = {(row["seed"], row["labels"]): row[metric] for row in results if row["strategy"] == strategy}
    return np.array([[lookup[seed, budget] for budget in budgets] for seed in seeds])


def summarise(args: argparse.Namespace, results: list[dict], seconds: list[dict[str, float]], elapsed: float) -> dict:
    """The report's JSON content: config, timings, curves and ratios with 95% bootstrap CIs, and every row."""
    budgets = sorted({row["labels"] for row in results})
    resamples = seed_resamples(len(seconds), args.bootstrap, seed=0)
    curves, ratios = {}, {}
    for metric in METRICS:
        tables = {strategy: error_table(results, strategy, metric, budgets) for strategy in LABELS}
        curves[metric] = {strategy: [asdict(point) for point in curve_intervals(table, resamples)]
                          for strategy, table in tables.items()}
        ratio = labels_saved_interval(np.array(budgets), tables["random"], tables["adpo_plus"], resamples)
        ratios[metric] = asdict(ratio)
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()}
    return {
        "config": config,
        "seeds": len(seconds),
        "budgets": budgets,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch threads {args.threads}",
        "seconds_total": elapsed,
        "seconds_per_seed": [sum(row.values()) for row in seconds],
        "seconds_by_strategy": {strategy: [row[strategy] for row in seconds] for strategy in LABELS},
        "curves": curves,
        "labels_saved": ratios,
        "results": results,
    }


def plot(report: dict, out: Path) -> None:
    """Seed 000's figure: one panel per metric, error vs log2(labels), mean over seeds with the 95% CI band."""
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
    fig.suptitle(f"Offline logit error on digits, pool 2^{report['config']['pool_log2']} "
                 f"(mean, 95% bootstrap CI over {report['seeds']} seeds)")
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _cell(point: dict, digits: int) -> str:
    return f"{point['value']:.{digits}f} [{point['low']:.{digits}f}, {point['high']:.{digits}f}]"


def markdown(report: dict) -> str:
    """Ratios, timings and per-budget tables (mean [95% CI]) as Markdown."""
    config, budget_max = report["config"], report["budgets"][-1]
    per_seed = np.mean(report["seconds_per_seed"])
    lines = [
        "# Offline logit error (seed 000's offline experiment on digits)",
        "",
        f"`python benchmarks/offline_logit_error.py --seeds {report['seeds']} --pool-log2 {config['pool_log2']} "
        f"--min-log2 {config['min_log2']} --max-log2 {config['max_log2']}` — {report['seeds']} seeds, pool "
        f"2^{config['pool_log2']} pairs, budgets 2^{config['min_log2']}…2^{config['max_log2']}, φ of dimension "
        f"{10 * (config['pca'] + 1)}, ridge {config['l2']:g}, ADPO+ refit every {config['refit_every']} picks after "
        f"{config['warm_start']} uniform ones.",
        "",
        f"Time: {report['seconds_total']:.0f} s in all, {per_seed:.0f} s per seed (selection: "
        + ", ".join(f"{LABELS[s]} {np.mean(v):.0f} s" for s, v in report["seconds_by_strategy"].items())
        + "), one torch thread on this project's 2-core box, which other jobs shared.",
        "",
        f"## Labels saved: labels Uniform needs for its error at {budget_max} ÷ labels ADPO+ needs for it",
        "",
        "| metric | ratio | 95% CI (paired seed bootstrap) |",
        "|---|---|---|",
    ]
    for metric, title in METRICS.items():
        ratio = Interval(**report["labels_saved"][metric])
        lines.append(f"| {title} | {ratio.value:.2f}x | [{ratio.low:.2f}, {ratio.high:.2f}] |")
    lines += ["", f"A ratio of {budget_max / report['budgets'][0]:.0f}x means ADPO+ reached the target at the "
              "smallest budget (a lower bound); 0 means it never reached it.", ""]
    for metric, title in METRICS.items():
        digits = 4 if metric == "error_rate" else 3
        lines += [f"## {title} (mean [95% CI])", "", "| labels | " + " | ".join(LABELS.values()) + " |",
                  "|---" * (len(LABELS) + 1) + "|"]
        for j, budget in enumerate(report["budgets"]):
            cells = [_cell(report["curves"][metric][strategy][j], digits) for strategy in LABELS]
            lines.append(f"| 2^{int(np.log2(budget))} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"![offline logit error]({NAME}.png)")
    return "\n".join(lines) + "\n"


def write_report(
    args: argparse.Namespace, results: list[dict], seconds: list[dict[str, float]], elapsed: float
) -> dict:
    """Write ``NAME.{json,md,png}`` under ``args.out``; returns the JSON content."""
    report = summarise(args, results, seconds, elapsed)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / f"{NAME}.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(args.out / f"{NAME}.md", markdown(report))
    plot(report, args.out / f"{NAME}.png")
    ratio = report["labels_saved"]
    print("labels saved: " + ", ".join(f"{METRICS[m]} {r['value']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]"
                                       for m, r in ratio.items()), flush=True)
    return report
