"""``benchmarks/gpu_check.py``: refuses clearly without CUDA; its report is named by date and GPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT

_SPEC = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gpu_check)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the no-GPU path does not apply")
def test_without_cuda_it_says_so_and_writes_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
        text=True,
    )
    assert result.returncode == gpu_check.NO_CUDA_EXIT
    assert "no CUDA device" in result.stderr and "no report" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_report_files_are_named_by_date_and_gpu(tmp_path: Path) -> None:
    report = {
        "date": "2026-11-25",
        "device": {"gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.1, "gpu_count": 1, "torch": "2.11.0",
                   "cuda": "13.0", "python": "3.12.3", "host": "box"},
        "matmul": {"fp32_tflops": 50.0, "bf16_tflops": 600.0, "bf16_over_fp32": 12.0},
        "gpu_tests": {"exit_code": 0, "tests": 7, "failures": 0, "errors": 0, "skipped": 1, "tail": ""},
        "benchmarks": [{"name": "selection", "script": "benchmarks/bench_selection.py", "exit_code": 0,
                        "seconds": 3.5, "output": "speedup 41.0x"},
                       {"name": "trainer", "script": "benchmarks/bench_trainer.py", "status": "not present"},
                       {"name": "fleet", "script": "benchmarks/bench_generation.py --gpu",
                        "status": "skipped: vllm not installed"},
                       {"name": "features", "script": "benchmarks/bench_features.py", "exit_code": None,
                        "seconds": 150.0, "output": "timed out after 150 s"}],
    }
    markdown = gpu_check.write_report(report, tmp_path)
    assert markdown.name == "2026-11-25-nvidia-h100-80gb-hbm3.md"
    assert json.loads(markdown.with_suffix(".json").read_text()) == report
    text = markdown.read_text()
    assert "**12.00×**" in text and "7 tests, 0 failures" in text and "speedup 41.0x" in text
    assert "`benchmarks/bench_trainer.py` is not present" in text
    assert "`benchmarks/bench_generation.py --gpu`: skipped: vllm not installed." in text
    assert "`benchmarks/bench_features.py` → timed out in 150.0 s" in text


def test_a_benchmark_that_outlives_its_timeout_is_recorded_as_timed_out() -> None:
    result = gpu_check.run_benchmark("-c", ["import time; print('started', flush=True); time.sleep(30)"], 2.0)
    assert result["exit_code"] is None and result["seconds"] < 20
    assert result["output"].startswith("started\n") and "timed out after 2 s" in result["output"]


def test_missing_engines_are_named() -> None:
    assert gpu_check.missing_modules(["torch", "no_such_module_here"]) == ["no_such_module_here"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bf16_matmul_is_faster_than_fp32_on_the_gpu() -> None:
    assert gpu_check.matmul_tflops(torch.bfloat16, size=4096, repeats=5) > gpu_check.matmul_tflops(
        torch.float32, size=4096, repeats=5
    )
