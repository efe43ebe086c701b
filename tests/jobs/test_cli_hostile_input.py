"""Every CLI verb that reads a file, given a representative bad one: exit 2 with one ``error:`` line naming the
file, row and field, no traceback, no Ray started, well under 30 s, and an existing output left untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from system.run_state import RoundState, save_round_state
from tests.conftest import REPO_ROOT

GOOD_PAIR = {"prompt": "Say hi.", "chosen": "hi", "rejected": "no"}


def _select(tmp: Path) -> tuple[list[str], str]:
    pool = tmp / "pool.jsonl"
    pool.write_text(json.dumps({"pair_id": "a", "phi": [1.0, 0.0]}) + "\n[1, 2]\n")
    return ["select", "--pool", str(pool), "--out", str(tmp / "out.jsonl"), "--budget", "1"], \
        f"{pool}: row 2: expected a JSON object, got list"


def _train(tmp: Path) -> tuple[list[str], str]:
    data = tmp / "pairs.parquet"
    data.write_bytes(b"PAR1 not really parquet PAR1")
    return ["train", "--data", str(data), "--out", str(tmp / "trained")], f"{data}: not a readable Parquet file"


def _generate(tmp: Path) -> tuple[list[str], str]:
    prompts = tmp / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n\n{"prompt": "   "}\n')
    return ["generate", "--prompts", str(prompts), "--out", str(tmp / "out.jsonl")], \
        f"{prompts}: row 3: field 'prompt': empty"


def _generate_with_a_missing_adapter(tmp: Path) -> tuple[list[str], str]:
    prompts = tmp / "prompts.jsonl"
    prompts.write_text('{"prompt": "ok"}\n')
    adapter = tmp / "../../no-such-adapter"
    return ["generate", "--prompts", str(prompts), "--out", str(tmp / "new.jsonl"), "--adapter", str(adapter)], \
        f"--adapter {adapter}: not a directory"


def _evaluate(tmp: Path) -> tuple[list[str], str]:
    prompts = tmp / "eval.jsonl"
    prompts.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    return ["evaluate", "--loop.eval_prompts_path", str(prompts)], f"{prompts}: row 2: not UTF-8 text"


def _export(tmp: Path) -> tuple[list[str], str]:
    run_dir = tmp / "run"
    save_round_state(run_dir, RoundState(round=1, phase="trained", policy_version=1))
    state = json.loads((run_dir / "state.json").read_text())
    (run_dir / "state.json").write_text(json.dumps({**state, "adapter_path": "/etc"}))
    return ["export", "--what", "adapter", "--run-dir", str(run_dir), "--out", str(tmp / "out.jsonl")], \
        f"{run_dir / 'state.json'}: field 'adapter_path': '/etc' is outside the run directory"


def _report(tmp: Path) -> tuple[list[str], str]:
    run_dir = tmp / "run"
    (run_dir / "round_000").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("selection: {strategy: adpo}\ntrain: {loss: dpo}\nloop: {seed: 0}\n")
    (run_dir / "round_000" / "metrics.json").write_text('{"labels": NaN, "eval/reward": "high"}')
    return ["report", str(run_dir), "--out", str(tmp / "report")], \
        f"{run_dir / 'round_000' / 'metrics.json'}: field 'eval/reward': expected a number, got str"


def _run(tmp: Path) -> tuple[list[str], str]:
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"p{i}", "prompt_id": "../../etc/passwd" if i in (2, 5)
                                           else f"id{i}"}) + "\n" for i in range(8)))
    return ["run", "--loop.prompts_path", str(prompts), "--loop.run_dir", str(tmp / "out.jsonl")], \
        f"{prompts}: row 6: field 'prompt_id': duplicate '../../etc/passwd' (first at row 3)"


def _train_into_a_file(tmp: Path) -> tuple[list[str], str]:
    data = tmp / "pairs.jsonl"
    data.write_text(json.dumps(GOOD_PAIR) + "\n")
    out = tmp / "out.jsonl"
    return ["train", "--data", str(data), "--out", str(out)], f"--out {out}: exists and is not a directory"


def _train_on_nothing(tmp: Path) -> tuple[list[str], str]:
    data = tmp / "empty.jsonl"
    data.write_text("\n")
    return ["train", "--data", str(data), "--out", str(tmp / "trained")], f"{data}: no preference pairs to train on"


def _long_line(tmp: Path) -> Path:
    """A JSONL file whose second row is one 17 MiB line (a valid pair with an absurd prompt)."""
    data = tmp / "long.jsonl"
    data.write_text(json.dumps(GOOD_PAIR) + "\n" + json.dumps({**GOOD_PAIR, "prompt": "x" * (17 * 2**20)}) + "\n")
    return data


def _train_on_a_long_line(tmp: Path) -> tuple[list[str], str]:
    data = _long_line(tmp)
    return ["train", "--data", str(data), "--out", str(tmp / "trained")], f"{data}: row 2: longer than 16 MiB"


def _select_from_a_long_line(tmp: Path) -> tuple[list[str], str]:
    data = _long_line(tmp)
    return ["select", "--pool", str(data), "--out", str(tmp / "picked.jsonl"), "--budget", "1"], \
        f"{data}: row 2: longer than 16 MiB"


VERBS: dict[str, Callable[[Path], tuple[list[str], str]]] = {
    "select": _select, "train": _train, "train-out-is-a-file": _train_into_a_file, "generate": _generate,
    "train-on-nothing": _train_on_nothing, "train-long-line": _train_on_a_long_line,
    "select-long-line": _select_from_a_long_line,
    "generate-missing-adapter": _generate_with_a_missing_adapter,
    "evaluate": _evaluate, "export": _export, "report": _report, "run": _run,
}


@pytest.mark.parametrize("verb", sorted(VERBS))
def test_cli_verb_refuses_a_bad_file_fast_with_one_line(tmp_path: Path, verb: str) -> None:
    args, expected = VERBS[verb](tmp_path)
    existing = tmp_path / "out.jsonl"
    existing.write_text('{"kept": true}\n')
    started = time.perf_counter()
    config = [] if verb == "report" else ["--config", "configs/tiny.yaml"]  # report reads run directories only
    result = subprocess.run([sys.executable, "-m", "jobs.cli", *args, *config],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - started
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {expected}"] or (len(errors) == 1 and errors[0].startswith(f"error: {expected}"))
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr and "Started a local Ray" not in result.stderr
    assert existing.read_text() == '{"kept": true}\n'
    assert not (tmp_path / "trained").exists()  # train refuses before it creates --out
    assert elapsed < 30, f"{verb} took {elapsed:.1f} s to refuse its input"
