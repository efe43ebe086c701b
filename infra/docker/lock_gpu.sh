#!/usr/bin/env bash
# Re-resolve infra/docker/constraints-gpu.txt: every package of activealign[gpu,cluster] pinned for the
# GPU image (CPython 3.11, linux x86_64). Run from the repository root on a Python 3.11 machine with PyPI access.
set -euo pipefail
report=$(mktemp)
trap 'rm -f "$report"' EXIT
python -m pip install --dry-run --ignore-installed --quiet --report "$report" "vllm==0.33.0" ".[gpu,cluster]"
python - "$report" infra/docker/constraints-gpu.txt <<'PY'
import json, sys
from datetime import date
report, target = sys.argv[1:]
pins = sorted(
    (item["metadata"]["name"].lower(), item["metadata"]["version"])
    for item in json.load(open(report))["install"]
    if item["metadata"]["name"].lower() != "activealign"
)
header = (
    "# Exact versions for the GPU image (infra/docker/Dockerfile): activealign[gpu,cluster] resolved by pip\n"
    f"# (`pip install --dry-run --report`) for CPython 3.11 on linux x86_64 on {date.today()} by lock_gpu.sh.\n"
    "# vllm pulls a CUDA 13 build of torch: the host's NVIDIA driver must support CUDA 13.\n"
)
open(target, "w").write(header + "".join(f"{name}=={version}\n" for name, version in pins))
PY
