"""SIGINT/SIGTERM of a command stops every process it started within 30 s and frees its ports.

Each command runs in its own session (``start_new_session``), so every process it starts — its Ray node,
the Serve controller, proxy and replicas, the actors — carries that session id, even once re-parented to
init; the test lists the session's processes before and after the signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from benchmarks.oracle_server import port_is_free, session_pids, start_healthy
from tests.conftest import REPO_ROOT, free_port

TOKEN = "clean-stop-token-0123456789"
STOP_WITHIN_S = 30
AGENT_GRACE_S = 90


def wait_gone(process: subprocess.Popen, seconds: float) -> list[int]:
    """Wait until the command's session has no live process (or ``seconds`` pass); returns what is left."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.poll()  # reap the command itself once it exits
        left = session_pids(process.pid)
        if not left:
            return []
        time.sleep(0.5)
    return session_pids(process.pid)


def kill_leftovers(pids: list[int]) -> list[str]:
    """SIGKILL what is left; returns their command lines, for the failure message."""
    commands = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            commands.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:160])
            os.kill(pid, signal.SIGKILL)
    return commands


def tiny_config(tmp_path: Path, port: int, **loop: object) -> Path:
    path = tmp_path / "config.yaml"
    base = yaml.safe_load((REPO_ROOT / "configs/tiny.yaml").read_text())
    base["oracle"].update({"port": port, "label_store_url": f"sqlite:///{tmp_path}/labels.db"})
    base["loop"].update({"run_dir": str(tmp_path / "run"), **loop})
    base["tracking"] = {**base.get("tracking", {}), "uri": f"sqlite:///{tmp_path}/mlflow.db"}
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.mark.drill
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_everything_and_frees_its_port(tmp_path: Path, stop_signal: signal.Signals) -> None:
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({
        "oracle": {"kind": "programmatic", "callable": "benchmarks.rewards:politeness", "port": port,
                   "label_store_url": f"sqlite:///{tmp_path}/labels.db"},
        "cluster": {"num_cpus": 4},
    }))
    server = start_healthy(config, tmp_path / "serve.log", f"http://127.0.0.1:{port}", TOKEN)
    assert len(session_pids(server.pid)) > 3  # the CLI, its Ray node, Serve's controller, proxy and replicas
    server.send_signal(stop_signal)
    left = kill_leftovers(wait_gone(server, STOP_WITHIN_S))
    assert not left, f"still running {STOP_WITHIN_S} s after {stop_signal.name}: {left}"
    # SIGTERM is serve's own stop request (exit 0); Ctrl-C may land outside its wait and exit 130, "interrupted".
    assert server.wait(timeout=5) in ({0} if stop_signal == signal.SIGTERM else {0, 130}) and port_is_free(port)


def start_command(args: list[str], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """``python -m jobs.cli <args>`` in its own session, output to a log file."""
    log = tmp_path / "command.log"
    env = {**os.environ, "ACTIVEALIGN_API_TOKEN": TOKEN, "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": ""}
    process = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=REPO_ROOT, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def stop_when(process: subprocess.Popen, log: Path, marker: str, stop_signal: signal.Signals) -> None:
    """Send ``stop_signal`` once ``marker`` is in the log; then every process of the session must be gone within
    30 s and the command must exit 130."""
    deadline = time.monotonic() + 300
    while marker not in log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    process.send_signal(stop_signal)
    left = kill_leftovers(wait_gone(process, STOP_WITHIN_S))
    assert not left, f"still running {STOP_WITHIN_S} s after {stop_signal.name}: {left}\n{log.read_text()[-2000:]}"
    assert process.wait(timeout=5) == 130, log.read_text()[-2000:]


@pytest.mark.drill
@pytest.mark.parametrize(("verb", "stop_signal", "marker"), [
    ("generate", signal.SIGTERM, "generation: 1 actors ready"),
    ("train", signal.SIGINT, "Reporting training result"),  # mid-training, past the workers' setup
])
def test_generate_and_train_stop_everything(tmp_path: Path, verb: str, stop_signal: signal.Signals,
                                           marker: str) -> None:
    config = tiny_config(tmp_path, free_port())
    # Work long enough to be interrupted in the middle of it (many samples; many epochs).
    data = ["--prompts", "configs/data/tiny_prompts.jsonl", "--out", str(tmp_path / "out.jsonl"),
            "--generation.responses_per_prompt", "64", "--generation.max_new_tokens", "96"] \
        if verb == "generate" else ["--data", "configs/data/tiny_pool.jsonl", "--out", str(tmp_path / "train"),
                                    "--train.epochs", "200"]
    process, log = start_command([verb, "--config", str(config), "--cluster.include_dashboard", "false", *data],
                                 tmp_path)
    stop_when(process, log, marker, stop_signal)


@pytest.mark.drill
@pytest.mark.parametrize(("stop_signal", "when"), [
    (signal.SIGTERM, "round 1/"),  # the round has begun: fleet, feature workers, selector and Serve are up
    (signal.SIGINT, "trainer: training on"),  # mid-training: the trainer group's workers are up and training
])
def test_run_stops_everything_mid_round_and_frees_its_port(tmp_path: Path, stop_signal: signal.Signals,
                                                          when: str) -> None:
    port = free_port()
    process, log = start_command(["run", "--config", str(tiny_config(tmp_path, port)),
                                  "--cluster.include_dashboard", "false"], tmp_path)
    stop_when(process, log, when, stop_signal)
    assert port_is_free(port)


@pytest.mark.drill
def test_sigkill_of_the_driver_leaves_nothing_in_the_way_of_a_new_start(tmp_path: Path) -> None:
    """The driver dies without running any ``finally``; the Ray node it started shares its fate (its GCS, raylet,
    Serve proxy and actors go within 30 s; Ray's per-node agents notice the dead raylet and follow within
    AGENT_GRACE_S), the oracle port is free, and a new ``serve`` on the same port starts."""
    port = free_port()
    process, log = start_command(["run", "--config", str(tiny_config(tmp_path, port)),
                                  "--cluster.include_dashboard", "false"], tmp_path)
    deadline = time.monotonic() + 300
    while "round 1/" not in log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)
    assert not port_is_free(port)
    process.kill()  # the CLI process alone, not its session
    time.sleep(STOP_WITHIN_S)
    assert port_is_free(port)
    left = kill_leftovers(wait_gone(process, AGENT_GRACE_S))
    assert not left, f"still running {STOP_WITHIN_S + AGENT_GRACE_S} s after the driver's SIGKILL: {left}"
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"oracle": {"kind": "programmatic", "callable": "benchmarks.rewards:politeness",
                                                 "port": port, "label_store_url": f"sqlite:///{tmp_path}/s.db"}}))
    server = start_healthy(config, tmp_path / "serve.log", f"http://127.0.0.1:{port}", TOKEN)
    server.send_signal(signal.SIGTERM)
    assert not kill_leftovers(wait_gone(server, STOP_WITHIN_S))
