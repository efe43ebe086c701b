"""Resume after SIGKILL: the resumed run selects exactly the pairs of an uninterrupted run, in the same MLflow run.

Both runs are real ``activealign run`` processes with their own local Ray (its session under a private
RAY_TMPDIR, so whatever the killed driver leaves behind is found and ended by PID afterwards).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from system.run_state import load_round_state
from tests.conftest import REPO_ROOT, free_port

ROUNDS = 2


def cli_args(tmp: Path, name: str) -> list[str]:
    settings = {
        "loop.run_dir": tmp / name, "loop.rounds": ROUNDS, "loop.prompts_per_round": 4, "loop.num_eval_prompts": 4,
        "generation.max_new_tokens": 8, "selection.budget": 4, "train.epochs": 1, "train.batch_size": 4,
        "oracle.port": free_port(), "oracle.label_store_url": f"sqlite:///{tmp}/{name}-labels.db",
        "tracking.uri": f"sqlite:///{tmp}/mlflow.db", "model.path": tmp / "model",
    }
    return [arg for key, value in settings.items() for arg in (f"--{key}", str(value))]


def short_ray_tmpdir() -> Path:
    """A private Ray temp dir with a short path: Ray's AF_UNIX socket paths must stay under 107 bytes."""
    return Path(tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp"))


def start(args: list[str], tmp: Path, log_name: str, ray_tmp: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp)}
    log = (tmp / log_name).open("wb")
    return subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", *args], cwd=REPO_ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def kill_leftovers(marker: str) -> None:
    """End every process whose command line names ``marker`` (this test's private Ray temp dir)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)


def wait(process: subprocess.Popen[bytes], tmp: Path, log_name: str, timeout: float = 900) -> None:
    assert process.wait(timeout=timeout) == 0, (tmp / log_name).read_text()[-3000:]


@pytest.mark.drill
def test_resume_after_sigkill_selects_the_same_pairs(tmp_path: Path) -> None:
    ray_tmp = short_ray_tmpdir()
    try:
        wait(start(cli_args(tmp_path, "full"), tmp_path, "full.log", ray_tmp), tmp_path, "full.log")

        killed = start(cli_args(tmp_path, "killed"), tmp_path, "killed.log", ray_tmp)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            state = load_round_state(tmp_path / "killed")
            if state is not None and (state.round, state.phase) >= (2, "generated"):
                break
            time.sleep(0.2)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        interrupted = load_round_state(tmp_path / "killed")
        assert interrupted is not None and interrupted.round == 2 and interrupted.phase != "evaluated"

        resumed = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--resume", str(tmp_path / "killed"),
                                  "--oracle.port", str(free_port())],
                                 cwd=REPO_ROOT, env={**os.environ, "RAY_TMPDIR": str(ray_tmp)},
                                 capture_output=True, text=True, timeout=900)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        kill_leftovers(str(ray_tmp))
        shutil.rmtree(ray_tmp, ignore_errors=True)

    final = load_round_state(tmp_path / "killed")
    assert final is not None and (final.round, final.phase) == (ROUNDS, "evaluated")
    assert final.mlflow_run_id == interrupted.mlflow_run_id
    for index in range(1, ROUNDS + 1):
        picks = [json.loads((tmp_path / run / f"round_{index:03d}" / "selection.json").read_text())["pair_ids"]
                 for run in ("full", "killed")]
        assert picks[0] == picks[1], f"round {index}"
        labels = [(tmp_path / run / f"round_{index:03d}" / "labels.jsonl").read_text() for run in ("full", "killed")]
        assert labels[0] == labels[1]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.get_run(final.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert sorted({m.step for m in client.get_metric_history(run.info.run_id, "eval/reward")}) == [0, 1, 2]
    full = load_round_state(tmp_path / "full")
    assert full is not None and full.mlflow_run_id != final.mlflow_run_id
