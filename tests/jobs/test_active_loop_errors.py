"""Bad input stops ``activealign run`` with one line naming the key, before Ray or any actor starts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

from jobs.active_loop import main
from system.config import dump_config, load_config
from system.errors import ConfigError
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    ("override", "message"),
    [
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


def test_a_short_oracle_token_fails_before_ray_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIVEALIGN_API_TOKEN", "fifteen-chars-x")
    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"loop.run_dir={tmp_path}/run"])
    with pytest.raises(ConfigError, match=r"^\$ACTIVEALIGN_API_TOKEN is shorter than 16 characters") as refused:
        main(config)
    assert "fifteen-chars-x" not in str(refused.value) and refused.value.exit_code == 2
    assert not ray.is_initialized()
    assert not (tmp_path / "run").exists()


def test_human_oracle_without_a_reward_function_is_refused_before_ray_starts(tmp_path: Path) -> None:
    config = load_config(REPO_ROOT / "configs/tiny.yaml", ["oracle.kind=human", f"loop.run_dir={tmp_path}/run"])
    with pytest.raises(ConfigError, match="oracle.kind: 'human' has no reward function"):
        main(config)
    assert not ray.is_initialized()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["selection.strategy=bogus"], r"selection.strategy: .*unknown strategy 'bogus' \(known: activedpo, adpo"),
        (["selection.strategy=no_such_module:rule"], r"selection.strategy: .*cannot import 'no_such_module'"),
        (["train.loss=kto"], r"train.loss: .*unknown loss 'kto'"),
        (["selection.strategy=adpo_plus", "train.loss=ipo"], r"adpo_plus weights pairs by μ\(1−μ\).*train.loss=ipo"),
    ],
)
def test_unknown_or_unsupported_names_are_refused_when_the_config_loads(overrides: list[str], message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        load_config(REPO_ROOT / "configs/tiny.yaml", overrides)
    assert time.perf_counter() - started < 2.0  # no model, no Ray: registry look-ups only


@pytest.mark.parametrize(("option", "key"), [(["--train.loss", "kto"], "train.loss"),
                                             (["--selection.strategy", "bogus"], "selection.strategy")])
def test_cli_prints_one_line_and_exits_2(tmp_path: Path, option: list[str], key: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--config", "configs/tiny.yaml", *option,
         "--loop.run_dir", str(tmp_path / "run")],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: configs/tiny.yaml + overrides: {key}")
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr


def test_resume_with_overrides_that_change_results_exits_2_before_ray(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    saved = dump_config(load_config(REPO_ROOT / "configs/tiny.yaml", [f"loop.run_dir={run_dir}"]))
    (run_dir / "config.yaml").write_text(saved)
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "run", "--resume", str(run_dir), "--selection.strategy", "adpo",
         "--train.loss", "ipo", "--loop.rounds", "5", "--tracking.enabled", "false"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --resume {run_dir}: the overrides change settings that change results: ")
    assert "selection.strategy ('random' -> 'adpo'), train.loss ('dpo' -> 'ipo')" in last
    assert "loop.rounds" not in last and "tracking" not in last
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
    assert (run_dir / "config.yaml").read_text() == saved
    assert time.perf_counter() - started < 30


def snapshot(run_dir: Path) -> dict[str, tuple[str, str | bytes]]:
    """Every entry under ``run_dir``: links by their target (never followed), files by their bytes."""
    entries: dict[str, tuple[str, str | bytes]] = {}
    for path in sorted(run_dir.rglob("*")):
        name = str(path.relative_to(run_dir))
        if path.is_symlink():
            entries[name] = ("link", str(path.readlink()))
        elif path.is_file():
            entries[name] = ("file", path.read_bytes())
        else:
            entries[name] = ("dir", "")
    return entries


def earlier_run(run_dir: Path, *overrides: str) -> str:
    """A run directory as an interrupted run leaves it: config.yaml and round 1's metrics; returns the config."""
    (run_dir / "round_001").mkdir(parents=True)
    (run_dir / "round_001" / "metrics.json").write_text('{"eval/reward": 0.25}')
    saved = dump_config(load_config(REPO_ROOT / "configs/tiny.yaml", [f"loop.run_dir={run_dir}", *overrides]))
    (run_dir / "config.yaml").write_text(saved)
    return saved


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobs.cli", "run", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def assert_refused_before_anything(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr


@pytest.mark.parametrize("state", ["loop", "dangling", "directory", "missing"])
def test_resume_that_cannot_read_the_state_stops_before_writing_anything(tmp_path: Path, state: str) -> None:
    """A state.json that cannot be read is an error, never "no state yet": the directory is left byte for byte."""
    run_dir = tmp_path / "run"
    earlier_run(run_dir)
    if state == "loop":
        (run_dir / "state.json").symlink_to("state2.json")
        (run_dir / "state2.json").symlink_to("state.json")
    elif state == "dangling":
        (run_dir / "state.json").symlink_to("gone.json")
    elif state == "directory":
        (run_dir / "state.json").mkdir()
    before = snapshot(run_dir)
    result = run_cli("--resume", str(run_dir), "--tracking.enabled", "false")
    expected = {"loop": "state.json: cannot read the round state", "dangling": "state.json: a symlink to a missing",
                "directory": "state.json: cannot read the round state", "missing": "no state.json there"}[state]
    assert_refused_before_anything(result, expected)
    assert snapshot(run_dir) == before


def test_a_fresh_run_refuses_a_directory_holding_a_run_unless_told_to_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    earlier_run(run_dir)
    (run_dir / "labels.db").write_bytes(b"labels")
    before = snapshot(run_dir)
    result = run_cli("--config", "configs/tiny.yaml", "--loop.run_dir", str(run_dir), "--tracking.enabled", "false")
    assert_refused_before_anything(result, f"loop.run_dir: {run_dir} holds an earlier run; continue it with "
                                           f"activealign run --resume {run_dir}")
    assert snapshot(run_dir) == before

    from jobs.loop_setup import open_run_dir, write_run_dir

    config = load_config(REPO_ROOT / "configs/tiny.yaml", [f"loop.run_dir={run_dir}"])
    opened, state = open_run_dir(config, resume=None, overwrite=True)
    assert opened == run_dir and state.round == 0 and snapshot(run_dir) == before  # opening writes nothing
    write_run_dir(config, run_dir, fresh=True)
    assert sorted(snapshot(run_dir)) == ["config.yaml", "labels.db"]  # the earlier rounds went, the labels stay
    assert (run_dir / "labels.db").read_bytes() == b"labels"


def test_resume_of_a_copied_run_without_its_mlflow_run_exits_2_saying_how_to_go_on(tmp_path: Path) -> None:
    from system.run_state import RoundState, save_round_state

    run_dir = tmp_path / "copy"
    earlier_run(run_dir, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db")
    save_round_state(run_dir, RoundState(round=1, phase="evaluated", mlflow_run_id="0123456789abcdef0123456789abcdef"))
    before = snapshot(run_dir)
    result = run_cli("--resume", str(run_dir))
    assert_refused_before_anything(result, "has no MLflow run 0123456789abcdef0123456789abcdef to continue")
    assert "--new-mlflow-run" in result.stderr.strip().splitlines()[-1]
    assert snapshot(run_dir) == before
