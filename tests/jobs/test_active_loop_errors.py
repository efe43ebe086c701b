"""Bad input stops ``activealign run`` with one line naming the key, before Ray or any actor starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import ray

from jobs.active_loop import main
from system.config import load_config
from system.errors import ConfigError
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("selection.strategy=bogus", "selection.strategy"),
        ("loop.prompts_path=missing/prompts.jsonl", "loop.prompts_path: missing/prompts.jsonl does not exist"),
        ("loop.eval_prompts_path=nope.jsonl", "loop.eval_prompts_path"),
    ],
)
def test_bad_config_fails_before_ray_starts(tmp_path: Path, override: str, message: str) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [override, f"loop.run_dir={tmp_path}/run"])
    with pytest.raises(ConfigError, match=message):
        main(config)
    assert not ray.is_initialized()
    assert not (tmp_path / "run").exists()


def test_cli_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--config", "configs/tiny.yaml", "--train.loss", "kto",
         "--loop.run_dir", str(tmp_path / "run")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: configs/tiny.yaml + overrides: train.loss")
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
