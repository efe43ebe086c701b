"""The report aggregates per-round metrics over seeds per strategy and renders HTML + PNG."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from system.config import dump_config, load_config
from system.errors import DataError
from system.report import load_run, summarise, write_report


def _fake_run(root: Path, name: str, strategy: str, seed: int, rewards: list[float]) -> Path:
    run_dir = root / name
    run_dir.mkdir()
    config = load_config(None, [f"selection.strategy={strategy}", f"loop.seed={seed}"])
    (run_dir / "config.yaml").write_text(dump_config(config))
    for index, reward in enumerate(rewards):
        (run_dir / f"round_{index:03d}").mkdir()
        metrics = {"labels": 8.0 * index, "eval/reward": reward, "eval/win_rate": 0.5 + 0.1 * index}
        (run_dir / f"round_{index:03d}" / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_summary_is_mean_and_std_over_seeds(tmp_path: Path) -> None:
    runs = [
        _fake_run(tmp_path, "a0", "activedpo", 0, [0.1, 0.3, 0.5]),
        _fake_run(tmp_path, "a1", "activedpo", 1, [0.1, 0.5, 0.7]),
        _fake_run(tmp_path, "r0", "random", 0, [0.1, 0.2, 0.2, 0.9]),  # one more round: cut to the common length
    ]
    summaries = {s.name: s for s in summarise([load_run(r) for r in runs])}
    assert summaries["activedpo"].reward_mean == pytest.approx([0.1, 0.4, 0.6])
    assert summaries["activedpo"].reward_std == pytest.approx([0.0, 0.1, 0.1])
    assert summaries["random"].labels == [0.0, 8.0, 16.0, 24.0]

    html = write_report(runs, tmp_path / "out")
    text = html.read_text()
    assert "activedpo" in text and "random" in text and "0.6000 ± 0.1000" in text
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_rounds_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a run directory"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text(dump_config(load_config(None)))
    with pytest.raises(DataError, match="no evaluated round"):
        load_run(tmp_path)


def test_an_infinite_metric_is_reported_as_missing_not_a_traceback(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    run = _fake_run(tmp_path, "a0", "activedpo", 0, [0.1, 0.3, 0.5])
    path = run / "round_001" / "metrics.json"
    path.write_text(path.read_text().replace('"eval/reward": 0.3', '"eval/reward": Infinity'))
    html = write_report([run, _fake_run(tmp_path, "a1", "activedpo", 1, [0.1, 0.5, 0.7])], tmp_path / "out")
    assert "0.6000 ± 0.1000" in html.read_text()  # the last round's reward, as for finite metrics
    assert (tmp_path / "out" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{path}: field 'eval/reward' is inf: reported as missing" in caplog.text
