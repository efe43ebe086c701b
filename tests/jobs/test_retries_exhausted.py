"""Retry bounds come from config: with no restarts left, a SIGKILLed actor stops the command with exit 3 and one
line naming the actor and what to do."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import free_port
from tests.jobs.test_clean_stop import kill_leftovers, start_command, tiny_config, wait_gone


def _actor_pid(command: int, actor_class: str) -> int | None:
    """The process of the command's Ray actor of class ``actor_class`` (Ray titles it ``ray::<class>…``), if any."""
    for process in psutil.Process(command).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if " ".join(process.cmdline()).startswith(f"ray::{actor_class}"):
                return process.pid
    return None


@pytest.mark.drill  # ~40-90 s each: a command starts, its actor is killed once it works
@pytest.mark.parametrize(("verb", "actor_class", "bound", "marker", "error"), [
    ("generate", "GenerationWorker", "cluster.retries.max_restarts", "generation: 1 actors ready",
     "error: generation actor 0 died and its restarts (cluster.retries.max_restarts) are used up; see its log under "
     "/tmp/ray/session_latest/logs (out of memory?), then rerun or raise cluster.retries.max_restarts"),
    ("train", "RayTrainWorker", "cluster.retries.trainer_max_failures", "Reporting training result",
     "error: trainer: the training workers failed 1 time (last: "),
])
def test_an_actor_killed_with_no_retries_left_stops_the_command_with_exit_3(
        tmp_path: Path, verb: str, actor_class: str, bound: str, marker: str, error: str) -> None:
    data = ["--prompts", "configs/data/tiny_prompts.jsonl", "--out", str(tmp_path / "out.jsonl"),
            "--generation.responses_per_prompt", "64", "--generation.max_new_tokens", "96"] \
        if verb == "generate" else ["--data", "configs/data/tiny_pool.jsonl", "--out", str(tmp_path / "train"),
                                    "--train.epochs", "200"]
    process, log = start_command([verb, "--config", str(tiny_config(tmp_path, free_port())), f"--{bound}", "0",
                                  "--cluster.include_dashboard", "false", *data], tmp_path)
    try:
        deadline = time.monotonic() + 300
        while marker not in log.read_text(errors="replace") or (victim := _actor_pid(process.pid, actor_class)) is None:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
        assert process.wait(timeout=120) == 3, log.read_text()[-3000:]
        last = log.read_text(errors="replace").strip().splitlines()[-1]
        assert last.startswith(error), last
    finally:
        kill_leftovers(wait_gone(process, 30))
