"""GPU validation: on a CUDA machine, run the gpu-marked tests and the GPU benchmarks and write a report.

Writes ``benchmarks/results/<YYYY-MM-DD>-<gpu>.json`` and ``.md``: the device and software versions, the
``pytest -m gpu`` outcome, a bf16-vs-fp32 matmul throughput ratio measured in the same run, and the output of each
GPU benchmark script present in ``benchmarks/``. On a machine without CUDA it says so and exits with status 2,
writing nothing (a report is only ever a record of a real run).

A benchmark whose engine is not installed (vLLM) is recorded as skipped with the missing module named; one that
outlives ``--bench-timeout`` is recorded as timed out. Both make the report incomplete, never silently.

Usage: python benchmarks/gpu_check.py [--out benchmarks/results] [--skip-tests] [--tests PATH ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
NO_CUDA_EXIT = 2
# (name, script, arguments, modules it needs) of the benchmarks that exercise the GPU paths.
GPU_BENCHMARKS = [
    ("vLLM fleet vs HF generation (tokens/s)", "benchmarks/bench_generation.py", ["--gpu"], ["vllm", "ray"]),
    ("DeepSpeed ZeRO-2/3 bf16 trainer step vs DDP", "benchmarks/bench_trainer.py", ["--gpu"], ["deepspeed", "ray"]),
    ("gradient features k=8192, ~1B model", "benchmarks/bench_features.py",
     ["--hidden", "2048", "--layers", "16", "--dim", "8192", "--device", "cuda"], []),
    ("selection at k=1024/8192", "benchmarks/bench_selection.py", [], []),
    ("selection on the GPU vs the CPU, N=10,000, k=8192", "benchmarks/bench_selection_device.py", [], []),
]


def device_info() -> dict[str, Any]:
    properties = torch.cuda.get_device_properties(0)
    return {
        "gpu": properties.name, "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
        "gpu_count": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "host": platform.node(),
    }


def matmul_tflops(dtype: torch.dtype, size: int = 8192, repeats: int = 20) -> float:
    """Dense ``size × size`` matmul throughput on GPU 0 in TFLOP/s (2·n³ flops per product)."""
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    torch.matmul(a, b)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        torch.matmul(a, b)
    torch.cuda.synchronize()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def run_gpu_tests(paths: list[str]) -> dict[str, Any]:
    """``pytest -m gpu`` on ``paths``; counts from its JUnit XML."""
    with tempfile.TemporaryDirectory() as scratch:
        junit_path = Path(scratch) / "gpu-tests.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={junit_path}", *paths]
        result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
        suite = ET.parse(junit_path).getroot().find("testsuite") if junit_path.exists() else None
    keys = ("tests", "failures", "errors", "skipped")
    counts = {key: int(suite.get(key, 0)) for key in keys} if suite is not None else {}
    return {"exit_code": result.returncode, **counts, "tail": result.stdout[-3000:]}


def missing_modules(modules: list[str]) -> list[str]:
    return [module for module in modules if importlib.util.find_spec(module) is None]


def _text(stream: str | bytes | None) -> str:
    """A captured stream as text (``TimeoutExpired`` carries bytes even when the run asked for text)."""
    return stream.decode(errors="replace") if isinstance(stream, bytes) else stream or ""


def run_benchmark(script: str, arguments: list[str], timeout_s: float) -> dict[str, Any]:
    """One benchmark script in a subprocess: exit code (None when it timed out), seconds and output tail."""
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    try:
        result = subprocess.run([sys.executable, script, *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=timeout_s, env=env)
        exit_code, output = result.returncode, result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        exit_code = None
        output = f"{_text(expired.stdout)}{_text(expired.stderr)}\ntimed out after {timeout_s:.0f} s"
    return {"exit_code": exit_code, "seconds": round(time.perf_counter() - start, 1), "output": output[-4000:]}


def run_benchmarks(timeout_s: float) -> list[dict[str, Any]]:
    results = []
    for name, script, arguments, modules in GPU_BENCHMARKS:
        entry: dict[str, Any] = {"name": name, "script": " ".join([script, *arguments])}
        if not (REPO_ROOT / script).exists():
            entry["status"] = "not present"
        elif missing := missing_modules(modules):
            entry["status"] = f"skipped: {', '.join(missing)} not installed"
        else:
            entry.update(run_benchmark(script, arguments, timeout_s))
        results.append(entry)
    return results


def report_markdown(report: dict[str, Any]) -> str:
    """The Markdown twin of the JSON report."""
    info, tests, matmul = report["device"], report.get("gpu_tests"), report["matmul"]
    lines = [
        f"# GPU check — {info['gpu']} — {report['date']}", "",
        f"{info['gpu_count']} × {info['gpu']} ({info['gpu_memory_gib']} GiB), torch {info['torch']}, "
        f"CUDA {info['cuda']}, Python {info['python']}.", "",
        "## Matmul throughput (same run)", "",
        f"bf16 {matmul['bf16_tflops']:.1f} TFLOP/s vs fp32 {matmul['fp32_tflops']:.1f} TFLOP/s: "
        f"**{matmul['bf16_over_fp32']:.2f}×**", "",
        "## `pytest -m gpu`", "",
    ]
    lines += ["not run (--skip-tests)", ""] if tests is None else [
        f"exit code {tests['exit_code']}: {tests.get('tests', 0)} tests, {tests.get('failures', 0)} failures, "
        f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped", "",
    ]
    lines += ["## Benchmarks", ""]
    for bench in report["benchmarks"]:
        lines += [f"### {bench['name']}", ""]
        if bench.get("status") == "not present":
            lines += [f"`{bench['script']}` is not present in this checkout.", ""]
        elif "status" in bench:
            lines += [f"`{bench['script']}`: {bench['status']}.", ""]
        else:
            outcome = "timed out" if bench["exit_code"] is None else f"exit {bench['exit_code']}"
            lines += [f"`{bench['script']}` → {outcome} in {bench['seconds']} s", "", "```", bench["output"].rstrip(),
                      "```", ""]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """Write ``<date>-<gpu slug>.json`` and ``.md`` under ``out_dir``; returns the Markdown path."""
    slug = re.sub(r"[^a-z0-9]+", "-", report["device"]["gpu"].lower()).strip("-")
    stem = out_dir / f"{report['date']}-{slug}"
    out_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    stem.with_suffix(".md").write_text(report_markdown(report))
    return stem.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    parser.add_argument("--tests", nargs="+", default=["tests"], help="paths given to pytest -m gpu")
    parser.add_argument("--bench-timeout", type=float, default=600.0, help="seconds each benchmark may run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing was run and no report "
              "was written. Run `make gpu-check` on a machine with an NVIDIA GPU.", file=sys.stderr)
        return NO_CUDA_EXIT
    fp32, bf16 = matmul_tflops(torch.float32), matmul_tflops(torch.bfloat16)
    report: dict[str, Any] = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "device": device_info(),
        "matmul": {"fp32_tflops": fp32, "bf16_tflops": bf16, "bf16_over_fp32": bf16 / fp32},
        "gpu_tests": None if args.skip_tests else run_gpu_tests(args.tests),
        "benchmarks": run_benchmarks(args.bench_timeout),
    }
    print(f"gpu-check: report written to {write_report(report, args.out)}")
    failed_tests = report["gpu_tests"] is not None and report["gpu_tests"]["exit_code"] not in (0, 5)
    failed_benchmarks = any(b.get("exit_code", 0) != 0 for b in report["benchmarks"])
    return 1 if failed_tests or failed_benchmarks else 0


if __name__ == "__main__":
    sys.exit(main())
