"""Dockerfiles and `make image`: pinned official bases, pinned installs with the right extras, no secrets, non-root."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO_ROOT

DOCKER_DIR = REPO_ROOT / "infra" / "docker"
DOCKERFILES = {"gpu": DOCKER_DIR / "Dockerfile", "cpu": DOCKER_DIR / "Dockerfile.cpu"}
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
SECRET_NAME = re.compile(r"(^|_)(TOKEN|PASSWORD|SECRET|ACCESS_KEY|API_KEY|CREDENTIALS?)(_|$)", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined, comments dropped."""
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    logical = re.sub(r"\\\n", " ", text)
    pairs = []
    for line in logical.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            pairs.append((keyword.upper(), " ".join(arguments.split())))
    return pairs


def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    pairs = (line.split("==") for line in lines if line)
    return {canonicalize_name(name): version for name, version in pairs}


def install_line(path: Path) -> str:
    runs = [args for keyword, args in instructions(path) if keyword == "RUN" and "pip install" in args]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_base_image_is_the_pinned_official_ray_image(variant: str) -> None:
    bases = [args for keyword, args in instructions(DOCKERFILES[variant]) if keyword == "FROM"]
    assert bases == [f"rayproject/ray:{ray.__version__}-py{sys.version_info.major}{sys.version_info.minor}-{variant}"]


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_install_line_names_extras_and_pins(variant: str) -> None:
    line = install_line(DOCKERFILES[variant])
    constraints = re.search(r"-c (\S+)", line)
    assert constraints, line
    assert (REPO_ROOT / constraints[1]).is_file()
    extras = set(re.search(r'"\.\[([a-z,-]+)\]"', line)[1].split(","))
    assert extras == ({"gpu", "cluster"} if variant == "gpu" else {"cluster"})
    assert extras <= set(pyproject()["project"]["optional-dependencies"])
    assert "--upgrade" not in line and "-U " not in line


def test_gpu_constraints_pin_every_requirement_inside_its_range() -> None:
    pinned = pins(DOCKER_DIR / "constraints-gpu.txt")
    project = pyproject()["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["gpu"],
                    *project["optional-dependencies"]["cluster"]]
    for text in requirements:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not pinned in constraints-gpu.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (text, pinned[name])
    assert pinned["ray"] == ray.__version__


@pytest.mark.parametrize("variant", DOCKERFILES)
def test_no_credentials_and_not_root(variant: str) -> None:
    steps = instructions(DOCKERFILES[variant])
    for keyword, args in steps:
        if keyword in ("ENV", "ARG", "LABEL"):
            names = [item.split("=")[0] for item in args.split()]
            assert not [name for name in names if SECRET_NAME.search(name)], args
        if keyword in ("COPY", "ADD"):
            sources = [part for part in args.split() if not part.startswith("--")][:-1]
            assert all((REPO_ROOT / source).exists() for source in sources), args
            assert not any(".env" in source or "secret" in source.lower() for source in sources), args
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert steps[-1][0] == "RUN" and "activealign --help" in steps[-1][1]
    ignored = (REPO_ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", ".env", "runs"} <= set(ignored)


def test_make_image_tags_match_the_manifests() -> None:
    dry_run = subprocess.run(["make", "-n", "image"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    version = pyproject()["project"]["version"]
    tags = re.findall(r"docker build -f (\S+) -t (\S+) \.", dry_run.stdout)
    assert tags == [("infra/docker/Dockerfile", f"activealign:{version}-gpu"),
                    ("infra/docker/Dockerfile.cpu", f"activealign:{version}-cpu")]
    manifests = (REPO_ROOT / "infra" / "k8s" / "base").glob("*.yaml")
    referenced = {image for path in manifests for image in re.findall(r"image: (activealign:\S+)", path.read_text())}
    assert referenced == {tag for _, tag in tags}


def test_make_image_says_clearly_when_no_docker_engine() -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = subprocess.run(["make", "image"], cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode != 0
    assert "no Docker engine reachable" in result.stderr and "Nothing was built" in result.stderr
