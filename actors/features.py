"""Sharded pair-feature workers: each holds the policy (base + LoRA), the seeded projection and its shard of φ.

φ never travels to the driver: every round a worker runs the strategy's worker side
(:func:`system.features.design_rows.strategy_rows`: its features, plug-in weights, row transform) under the adapter it
holds, on its shard of the round's candidate pairs AND its shard of every pair labelled in earlier rounds
(their features are recomputed under the current policy, ActiveDPO paper, Prop. 1). It keeps the candidate rows
x_i and their cached scores s_i = x_iᵀV⁻¹x_i (a :class:`~system.selection.shards.Shard`) and serves the
worker side of the distributed greedy (docs/method.md): propose its best row, apply a broadcast (z, c)
with one mat-vec; or rank its rows by a scorer sent once per pick step (the ensemble's heads). The labelled
rows go to the selector once per round. A worker writes its rows to
``state_dir`` after featurising, so a worker that Ray restarts reloads them in ``setup()`` and the
selector can replay the round's updates onto it.

Rows are stamped with the policy version they were computed under (``rows_version``). A worker killed after an
adapter sync but before its next featurize restores rows and adapter of the older version from its file; the
group then brings it to the version it serves (:func:`~actors.weights.restore_with_adapter`) before it takes
work, and until it featurizes again it refuses to score those older rows (:class:`~system.errors.StaleVersionError`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from actors.group import ActorGroup, ActorNotReadyError
from actors.placement import PlacementWait
from actors.weights import AdapterPayload, VersionedAdapter, restore_with_adapter
from system.config import Config
from system.errors import StaleVersionError
from system.features.design_rows import strategy_rows
from system.features.embeddings import implicit_reward_margins
from system.fileio import atomic_output
from system.models.loading import serve_adapter
from system.run_state import load_state_file
from system.selection import Proposal, Shard, get_strategy
from system.selection.shards import Ranked, RowScorer, blocked_rows, selection_device, shard_evenly
from system.types import CandidatePair

logger = logging.getLogger(__name__)


class FeatureWorker(VersionedAdapter):
    """One shard of the pool: candidate and labelled rows, cached scores, best row and rank-one score updates."""

    def __init__(self, rank: int, config: Config, state_dir: str) -> None:
        super().__init__()
        self.rank = rank
        self.config = config
        self.state_file = Path(state_dir) / f"features-{rank}.pt"
        self.model: Any = None
        self.tokenizer: Any = None
        self._adapter_dir: Path | None = None
        self.pair_ids: list[str] = []
        self.rows = torch.zeros(0, 0)
        self.labelled = torch.zeros(0, 0)
        self.rows_version = 0
        self.shard = Shard(self.rows)
        self.device = torch.device("cpu")

    def setup(self) -> int:
        """Load the policy (and, after a restart, the last adapter and feature shard); returns the version held."""
        from system.models.loading import load_policy

        self.device = selection_device(self.config.selection.device)
        self.model, self.tokenizer = load_policy(self.config.model, self.config.lora, is_trainable=False)
        if self.state_file.exists():
            saved = load_state_file(self.state_file)
            if saved["adapter_dir"] is not None:
                self._apply_adapter(Path(saved["adapter_dir"]), saved["version"])
            self.policy_version = self.rows_version = saved["version"]
            self.pair_ids, self.rows, self.labelled = saved["pair_ids"], saved["rows"], saved["labelled"]
            logger.info("feature worker %d restored %d rows of version %d", self.rank, len(self.pair_ids),
                        self.policy_version)
        return self.policy_version

    def _apply_adapter(self, adapter_dir: Path, version: int) -> None:
        self.model = serve_adapter(self.model, self.config.model, self.config.lora, adapter_dir)
        self._adapter_dir = adapter_dir

    def featurize(
        self, pairs: Sequence[CandidatePair], labelled: Sequence[CandidatePair], policy_version: int, strategy: str
    ) -> int:
        """Rows x_i of ``strategy`` for this shard's candidate ``pairs`` and ``labelled`` pairs under the version
        held (one pass over both); returns how many candidate rows are zero."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        self.require_version(policy_version)
        both = [*pairs, *labelled]
        rows = torch.zeros(0, 0)  # an empty shard: fewer pairs than workers, or a pool drawn once ran out (APO)
        if both:
            rows = strategy_rows(get_strategy(strategy), self.model, self.tokenizer, both, self.config)
        self.set_features([pair.pair_id for pair in pairs], rows[: len(pairs)], rows[len(pairs) :])
        return int(blocked_rows(self.rows).sum())

    def reward_margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> Tensor:
        """Implicit-reward margins h_i = r_θ(x, y1) − r_θ(x, y2) under the version held → [N_w]."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        self.require_version(policy_version)
        return implicit_reward_margins(self.model, self.tokenizer, pairs, self.config)

    def set_features(self, pair_ids: Sequence[str], rows: Tensor, labelled: Tensor | None = None) -> int:
        """Hold precomputed candidate rows [N_w, k] and labelled rows [L_w, k] (default none) instead of
        featurising (offline pools, tests), stamped with the version served; persisted for restarts."""
        self.pair_ids, self.rows = list(pair_ids), rows
        self.labelled = rows[:0] if labelled is None else labelled
        self.rows_version = self.policy_version
        with atomic_output(self.state_file) as staging:
            torch.save({"pair_ids": self.pair_ids, "rows": rows, "labelled": self.labelled,
                        "version": self.rows_version, "adapter_dir": self._adapter_dir and str(self._adapter_dir)},
                       staging)
        return len(self.pair_ids)

    def _require_current_rows(self) -> None:
        """Raise unless set up and holding rows of the version served (not an older one restored from disk)."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        if self.rows_version != self.policy_version:
            raise StaleVersionError(f"feature worker {self.rank} holds rows of policy version {self.rows_version} "
                                    f"but serves {self.policy_version}: featurize them again first")

    def begin_round(self, v_inv: Tensor, offset: int) -> Proposal | None:
        """Score every row under V⁻¹ [k, k] (zero rows blocked) and propose the best; this shard's rows have
        global indices ``offset`` + local index."""
        self._require_current_rows()
        self.shard = Shard(self.rows, offset, self.device)
        return self.shard.begin(v_inv)

    def top_rows(self, scorer: RowScorer, budget: int, offset: int) -> list[Ranked]:
        """This shard's ``budget`` best candidate rows by ``scorer`` (zero rows never), global indices."""
        self._require_current_rows()
        return Shard(self.rows, offset, self.device).top(scorer, budget)

    def apply_update(self, z: Tensor, c: float, taken: int) -> Proposal | None:
        """s_i ← s_i − (x_iᵀz)²/c after the selector's Sherman–Morrison step; mark ``taken`` if ours; propose again."""
        return self.shard.update(z, c, taken)

    def replay(self, v_inv: Tensor, offset: int, history: Sequence[tuple[Tensor, float, int]]) -> Proposal | None:
        """Rebuild this round's cached scores after a restart: ``begin_round`` then every update so far."""
        proposal = self.begin_round(v_inv, offset)
        for z, c, taken in history:
            proposal = self.apply_update(z, c, taken)
        return proposal

    def shard_info(self) -> tuple[list[str], Tensor, int]:
        """(pair ids of the candidate rows, [N_w] bool mask of zero rows, feature dimension k)."""
        self._require_current_rows()
        return self.pair_ids, blocked_rows(self.rows), self.rows.shape[1]

    def labelled_rows(self) -> Tensor:
        """Rows [L_w, k] of this shard of the pairs labelled in earlier rounds, under the version held."""
        self._require_current_rows()
        return self.labelled

    def row(self, index: int) -> Tensor:
        """Candidate row ``index`` (local) [k]."""
        return self.rows[index]


class FeatureWorkerGroup:
    """``features.num_workers`` feature workers with ``cluster.features`` resources.

    Args:
        config: the whole config.
        state_dir: where workers persist their shard for restarts (node-local disk is enough on one node;
            shared storage on a cluster).
        placement_group: shared with the generation fleet under ``colocate`` (worker ``i`` in bundle ``i``); None
            reserves the workers' own.
    """

    def __init__(self, config: Config, state_dir: str | Path, placement_group: Any = None) -> None:
        self.config = config
        self._adapter: tuple[Any, int] | None = None
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        self.group = ActorGroup(
            FeatureWorker,
            config.features.num_workers,
            config.cluster.features,
            actor_args=(config, str(state_dir)),
            placement_group=placement_group,
            placement_wait=PlacementWait.from_config(config),
            retries=config.cluster.retries,
            on_restart=self._restore,
            name="features",
        )

    @property
    def workers(self) -> list[Any]:
        return self.group.actors

    def setup(self) -> None:
        self.group.setup()

    def _restore(self, actor: Any) -> list[Any]:
        """Bring a restarted worker back: policy and its shard file, then the adapter version the group serves."""
        return restore_with_adapter(actor, self._adapter)

    def load_adapter(self, adapter: AdapterPayload | Any, version: int) -> None:
        """Serve ``version``: a payload, its object ref or a shared-storage path."""
        self._adapter = (adapter, version)
        self.group.call_all("load_adapter", adapter, version)

    def featurize(
        self, pairs: Sequence[CandidatePair], labelled: Sequence[CandidatePair], policy_version: int, strategy: str
    ) -> int:
        """Shard the round's candidate ``pairs`` and the earlier rounds' ``labelled`` pairs contiguously across
        workers and featurise both; returns the number of zero-feature candidate pairs."""
        shards = shard_evenly(list(pairs), len(self.workers))
        labelled_shards = shard_evenly(list(labelled), len(self.workers))
        args = [(s, old, policy_version, strategy) for s, old in zip(shards, labelled_shards, strict=True)]
        return sum(self.group.call_each("featurize", args))

    def reward_margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> Tensor:
        """h_i for every pair, computed on the workers' shards → [N] in input order."""
        shards = [shard for shard in shard_evenly(list(pairs), len(self.workers)) if shard]
        return torch.cat(self.group.map_shards("reward_margins", shards, policy_version))

    def set_features(self, pair_ids: Sequence[str], phi: Tensor, labelled: Tensor | None = None) -> None:
        """Distribute precomputed rows [N, k] and labelled rows [L, k] (offline pools, benchmarks, tests) in
        contiguous shards."""
        id_shards = shard_evenly(list(pair_ids), len(self.workers))
        bounds = [0]
        for shard in id_shards:
            bounds.append(bounds[-1] + len(shard))
        old = phi[:0] if labelled is None else labelled
        old_shards = torch.tensor_split(old, len(self.workers))
        spans = zip(id_shards, bounds[:-1], bounds[1:], old_shards, strict=True)
        self.group.call_each("set_features", [(ids, phi[start:stop], rows) for ids, start, stop, rows in spans])

    def shutdown(self) -> None:
        self.group.shutdown()
