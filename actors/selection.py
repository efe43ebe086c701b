"""The loop's selection part: the sharded feature workers and the selector actor behind one object.

It implements :class:`system.loop.PairSelector`, the interface the active loop selects through, so the
loop never sees actors: featurise the round's candidates (and recompute every labelled pair's features)
on the workers, then run the distributed greedy on the selector.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.features import FeatureWorkerGroup
from actors.selector import Selector
from system.config import Config
from system.fileio import atomic_write_bytes


class SelectionParts:
    """Feature workers + selector actor behind the loop's :class:`~system.loop.PairSelector` interface.

    ``placement_group``: the group the feature workers share with the generation fleet under ``colocate``
    (worker ``i`` in bundle ``i``); None reserves their own.

    The selector checkpoints its design state to ``checkpoint`` after every round; the loop copies it
    into the round directory, and :meth:`restore` puts the copy of the last finished selection back
    before the actor starts, so a resumed run continues from exactly that V⁻¹.
    """

    def __init__(self, config: Config, run_dir: Path, placement_group: Any = None) -> None:
        self.config = config
        self.checkpoint = run_dir / "selector" / "design.pt"
        self.features = FeatureWorkerGroup(config, run_dir / "features", placement_group)
        self.selector = Selector(config, self.checkpoint)

    def restore(self, snapshot: str | None) -> None:
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        if snapshot is None:
            self.checkpoint.unlink(missing_ok=True)
        else:
            shutil.copyfile(snapshot, self.checkpoint)

    def setup(self) -> None:
        self.features.setup()
        self.selector.setup()

    def load_adapter(self, adapter: Any, version: int) -> None:
        self.features.load_adapter(adapter, version)

    def featurize(self, pairs: Sequence[Any], labelled: Sequence[Any], policy_version: int) -> int:
        return self.features.featurize(pairs, labelled, policy_version, self.config.selection.strategy)

    def select(self, budget: int, round_index: int) -> Any:
        return self.selector.select(self.features, budget, self.config.selection.strategy, round_index)

    def margins(self, pairs: Sequence[Any], policy_version: int) -> list[float]:
        return self.features.reward_margins(pairs, policy_version).tolist()

    def save_state(self, path: Path) -> None:
        atomic_write_bytes(path, self.checkpoint.read_bytes())

    def shutdown(self) -> None:
        self.selector.shutdown()
        self.features.shutdown()
