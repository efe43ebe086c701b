"""Job script submitted by tests/infra/test_multinode.py with ``ray job submit``.

Starts one :class:`actors.group.ActorGroup` per ``config.cluster.<group>`` (each in its own placement group,
with exactly the resources the config asks for) and prints ``PLACEMENT {"group": [node_id, ...], ...}``.

Usage: python placement_probe.py CONFIG [--section.key VALUE ...]
"""

from __future__ import annotations

import json
import sys

import ray

from actors.group import ActorGroup
from system.config import load_config, overrides_from_args


class NodeReporter:
    """A role whose ``setup()`` answers with the id of the Ray node it runs on."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def setup(self) -> str:
        return ray.get_runtime_context().get_node_id()


def main(argv: list[str]) -> None:
    config = load_config(argv[0], overrides_from_args(argv[1:]))
    ray.init(address=config.cluster.address)
    sizes = {
        "generation": config.generation.num_actors,
        "features": config.features.num_workers,
        "selector": 1,
        "trainer": config.train.num_workers,
        "oracle": config.oracle.max_replicas,
    }
    placement = {}
    for group, count in sizes.items():
        actors = ActorGroup(NodeReporter, count, getattr(config.cluster, group), name=group)
        placement[group] = actors.setup()
        actors.shutdown()
    print("PLACEMENT " + json.dumps(placement), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
