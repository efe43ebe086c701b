"""`system/` imports with Ray, vLLM and DeepSpeed unavailable; Ray and vLLM appear nowhere in it, and DeepSpeed only
inside the functions of `system/training/engine.py` that build a DeepSpeed engine (so it is needed only when
`train.deepspeed.enabled` trains with it)."""

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


HEAVY = ("ray", "vllm", "deepspeed")
DEEPSPEED_HOME = "system/training/engine.py"


def _heavy_imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level package, line, inside a function?) of every import of Ray, vLLM or DeepSpeed in a file."""
    found: list[tuple[str, int, bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                names = [child.module]
            found.extend((name.split(".")[0], child.lineno, in_function) for name in names
                         if name.split(".")[0] in HEAVY)
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    walk(ast.parse(path.read_text()), False)
    return found


def test_deepspeed_is_imported_only_inside_the_deepspeed_engine_and_ray_vllm_nowhere() -> None:
    imports = {str(path.relative_to(REPO)): _heavy_imports(path) for path in sorted((REPO / "system").rglob("*.py"))}
    outside = {path: found for path, found in imports.items() if found and path != DEEPSPEED_HOME}
    assert outside == {}
    in_engine = imports[DEEPSPEED_HOME]
    assert in_engine, f"{DEEPSPEED_HOME} no longer imports deepspeed: update this test and the README's layout"
    assert {package for package, _, _ in in_engine} == {"deepspeed"}
    assert all(in_function for _, _, in_function in in_engine), in_engine


def test_the_import_scan_sees_imports_at_every_depth(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text("import os\nimport ray.util\n\ndef f():\n    if True:\n        from deepspeed.ops import adam\n"
                      "\nclass C:\n    def m(self):\n        import vllm\n")
    assert _heavy_imports(source) == [("ray", 2, False), ("deepspeed", 6, True), ("vllm", 10, True)]


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
