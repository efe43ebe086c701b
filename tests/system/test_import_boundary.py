"""`system/` must import with Ray, vLLM and DeepSpeed unavailable (style.md, pattern 1)."""

from __future__ import annotations

import ast
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


def _system_imports(path: Path) -> set[str]:
    """``system.*`` modules a file imports anywhere (module level or inside functions)."""
    tree = ast.parse(path.read_text())
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    names |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {name for name in names if name.startswith("system.")}


def test_system_has_no_import_cycles() -> None:
    """A cycle hidden behind a call-time import still ties modules together; none is allowed."""
    graph = {}
    for path in (REPO / "system").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        graph[module] = _system_imports(path)
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " → ".join([*visiting[visiting.index(module):], module])
        if module in done or module not in graph:
            return
        visiting.append(module)
        for target in sorted(graph[module]):
            if not module.startswith(target + ".") and target != module:  # a package importing its own parts
                visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
