"""`system/` must import with Ray, vLLM and DeepSpeed unavailable (style.md, pattern 1)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib, sys
# A None entry makes `import ray` fail and `importlib.util.find_spec('ray')` return None,
# exactly as when the package is not installed.
for blocked in ('ray', 'vllm', 'deepspeed'):
    sys.modules[blocked] = None
for name in MODULES:
    importlib.import_module(name)
print('ok', len(MODULES))
"""


def test_system_imports_without_ray_vllm_deepspeed() -> None:
    modules = ["system"] + [
        f"system.{info.name}" for info in pkgutil.walk_packages([str(REPO / "system")])
    ]
    code = f"MODULES = {modules!r}\n" + BLOCKER
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"ok {len(modules)}"
