"""How ``activealign run`` and ``serve`` start an in-process Ray: what ``ray.init`` is asked for."""

from __future__ import annotations

from typing import Any

import pytest

import jobs.ray_session
from jobs.ray_session import start_local_ray
from system.config import load_config
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize("config_file", ["tiny.yaml", "cluster-7b.yaml"])
def test_local_ray_binds_its_dashboard_to_loopback(monkeypatch: pytest.MonkeyPatch, config_file: str) -> None:
    """The dashboard runs jobs for whoever reaches it, so a local Ray serves it on 127.0.0.1 only."""
    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(jobs.ray_session.ray, "init", lambda **kwargs: asked.append(kwargs))
    overrides = ["cluster.address=null", "cluster.include_dashboard=true"]
    config = load_config(REPO_ROOT / "configs" / config_file, overrides)

    start_local_ray(config)

    assert len(asked) == 1
    assert asked[0]["dashboard_host"] == "127.0.0.1" and asked[0]["include_dashboard"] is True
