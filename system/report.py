"""Experiment report: oracle reward vs number of labels, one curve per selection strategy (mean ± std over seeds).

Reads each run directory's ``config.yaml`` and ``round_NNN/metrics.json`` (written by the loop after each
round's evaluation) and writes ``report.png`` (matplotlib) and ``report.html`` (jinja2 template).
Runs are grouped by strategy, and by loss too when the runs use more than one loss.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from jinja2 import Environment, FileSystemLoader, select_autoescape  # noqa: E402

from system.errors import DataError  # noqa: E402
from system.fileio import atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class RunCurve:
    """One run's per-round evaluation: ``rounds[i]`` is the metrics dict of round i (0 = before training)."""

    run_dir: str
    strategy: str
    loss: str
    seed: int
    rounds: tuple[dict[str, float], ...]


@dataclass(frozen=True)
class StrategySummary:
    """Mean and std over a group's runs, per round (arrays of length = common number of rounds + 1)."""

    name: str
    num_runs: int
    labels: list[float]
    reward_mean: list[float]
    reward_std: list[float]
    win_rate_mean: list[float]
    win_rate_std: list[float]


def load_run(run_dir: str | Path) -> RunCurve:
    """Read a run directory; raises DataError naming the directory when it has no evaluated round."""
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        raise DataError(f"{run_dir}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_bytes())
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{config_path}: not a readable config ({type(exc).__name__})") from None
    strategy, loss = (_setting(config_path, config, section, key) for section, key in
                      (("selection", "strategy"), ("train", "loss")))
    seed = _setting(config_path, config, "loop", "seed", int)
    rounds = []
    for index in range(10_000):
        path = run_dir / f"round_{index:03d}" / "metrics.json"
        if not path.exists():
            break
        rounds.append(_metrics(path))
    if not rounds:
        raise DataError(f"{run_dir}: no evaluated round (round_000/metrics.json missing)")
    return RunCurve(str(run_dir), strategy, loss, seed, tuple(rounds))


def _setting(path: Path, config: object, section: str, key: str, kind: type = str) -> Any:
    """``config[section][key]`` of a run's ``config.yaml``, which must be a ``kind``."""
    value = config.get(section, {}).get(key) if isinstance(config, dict) and isinstance(
        config.get(section, {}), dict) else None
    if isinstance(value, bool) or not isinstance(value, kind):
        expected = "an integer" if kind is int else "a string"
        raise DataError(f"{path}: {section}.{key}: expected {expected}, got {value!r}")
    return value


def _metrics(path: Path) -> dict[str, float]:
    """A round's ``metrics.json``: an object of numbers (non-numeric entries are refused). ``Infinity`` and
    ``-Infinity`` (which Python's JSON writes for an overflowed metric) are read as NaN, a value the report
    leaves out of its means and plots, with a warning naming the file and the key."""
    try:
        metrics = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(metrics, dict):
        raise DataError(f"{path}: expected a JSON object of metrics, got {type(metrics).__name__}")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{path}: field {key!r}: expected a number, got {type(value).__name__}")
        if math.isinf(value):
            logger.warning("%s: field %r is %s: reported as missing", path, key, value)
            metrics[key] = math.nan
    return metrics


def summarise(curves: Sequence[RunCurve]) -> list[StrategySummary]:
    """Group runs by strategy (and loss when several losses occur) over their common rounds."""
    by_loss = len({curve.loss for curve in curves}) > 1
    groups: dict[str, list[RunCurve]] = defaultdict(list)
    for curve in curves:
        groups[f"{curve.strategy} ({curve.loss})" if by_loss else curve.strategy].append(curve)
    summaries = []
    for name, group in sorted(groups.items()):
        length = min(len(curve.rounds) for curve in group)

        def column(key: str, group: list[RunCurve] = group, length: int = length) -> np.ndarray:
            return np.array([[r.get(key, np.nan) for r in curve.rounds[:length]] for curve in group])  # [runs, R]

        reward, win, labels = column("eval/reward"), column("eval/win_rate"), column("labels")
        summaries.append(StrategySummary(
            name, len(group), labels.mean(0).tolist(), reward.mean(0).tolist(), reward.std(0).tolist(),
            win.mean(0).tolist(), win.std(0).tolist(),
        ))
    return summaries


def plot(summaries: Sequence[StrategySummary], path: Path) -> None:
    """Two panels vs labels: oracle reward and win-rate vs the reference, mean ± std band per strategy."""
    figure, (reward_ax, win_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for summary in summaries:
        labels = np.array(summary.labels)
        for ax, mean, std in ((reward_ax, summary.reward_mean, summary.reward_std),
                              (win_ax, summary.win_rate_mean, summary.win_rate_std)):
            mean_arr, std_arr = np.array(mean), np.array(std)
            ax.plot(labels, mean_arr, marker="o", label=f"{summary.name} (n={summary.num_runs})")
            ax.fill_between(labels, mean_arr - std_arr, mean_arr + std_arr, alpha=0.15)
    reward_ax.set(xlabel="labels", ylabel="oracle reward (held-out prompts)", title="Reward vs labels")
    win_ax.set(xlabel="labels", ylabel="win-rate vs reference", title="Win-rate vs labels")
    reward_ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Write ``out_dir/report.png`` and ``out_dir/report.html``; returns the HTML path."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir}: exists and is not a directory")
    curves = [load_run(run_dir) for run_dir in run_dirs]
    summaries = summarise(curves)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / "report.png"
    plot(summaries, png)
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    html = environment.get_template("report.html").render(runs=curves, summaries=summaries, png_name=png.name)
    atomic_write_text(out_dir / "report.html", html)
    atomic_write_text(out_dir / "summary.json", json.dumps([s.__dict__ for s in summaries], indent=1))
    return out_dir / "report.html"
