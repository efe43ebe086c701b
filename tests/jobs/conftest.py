"""A local Ray cluster shared by the job tests of one module (8 logical CPUs; no dashboard)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from jobs.ray_session import start_local_ray
    from system.config import load_config

    context = start_local_ray(load_config(None, ["cluster.num_cpus=8", "cluster.include_dashboard=false"]))
    yield context
    ray.shutdown()
