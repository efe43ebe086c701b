"""Sharded pair-feature workers: each holds the policy (base + LoRA), the seeded projection and its shard of φ.

φ never travels to the driver: a worker featurises its shard of candidate pairs, keeps the rows
x_i (φ_i, or √w_i·φ_i for weighted strategies) and their cached scores s_i = x_iᵀV⁻¹x_i, and serves
the worker side of the distributed greedy (science.md): propose its local argmax (index, score,
x row), apply a broadcast (z, c) with one mat-vec. A worker writes its shard to ``state_dir`` after
featurising, so a worker that Ray restarts reloads it in ``setup()`` and the selector can replay
the round's updates onto it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from actors.group import ActorGroup, ActorNotReadyError, shard_evenly
from actors.weights import AdapterPayload, VersionedAdapter, load_adapter_weights
from system.config import Config
from system.features import FEATURES_BY_KIND, implicit_reward_margins, plugin_weights
from system.fileio import atomic_output
from system.selection import get_strategy
from system.selection.shards import score_shard, shard_argmax, update_shard_scores
from system.types import CandidatePair

logger = logging.getLogger(__name__)

Proposal = tuple[int, float, str, Tensor]
"""A worker's local argmax: (local index, score, pair id, its feature row x [k])."""


class FeatureWorker(VersionedAdapter):
    """One shard of the pool: features, cached scores, local argmax and rank-one score updates."""

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
        self.scores = torch.zeros(0)
        self.taken = torch.zeros(0, dtype=torch.bool)

    def setup(self) -> int:
        """Load the policy (and, after a restart, the last adapter and feature shard); returns the version held."""
        from system.models.loading import load_policy

        self.model, self.tokenizer = load_policy(self.config.model, self.config.lora, is_trainable=False)
        if self.state_file.exists():
            saved = torch.load(self.state_file, weights_only=False)
            if saved["adapter_dir"] is not None:
                self._apply_adapter(Path(saved["adapter_dir"]), saved["version"])
            self.policy_version = saved["version"]
            self.pair_ids, self.rows = saved["pair_ids"], saved["rows"]
            logger.info("feature worker %d restored %d rows of version %d", self.rank, len(self.pair_ids),
                        self.policy_version)
        return self.policy_version

    def _apply_adapter(self, adapter_dir: Path, version: int) -> None:
        if self.config.lora.enabled:
            load_adapter_weights(self.model, adapter_dir)
        else:
            from system.models.loading import load_policy

            self.model = load_policy(self.config.model, self.config.lora, adapter_dir, is_trainable=False)[0]
        self._adapter_dir = adapter_dir

    def featurize(self, pairs: Sequence[CandidatePair], policy_version: int, strategy: str) -> int:
        """Compute and keep this shard's rows x_i for ``strategy``'s feature kind; returns how many are zero."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        self.require_version(policy_version)
        rule = get_strategy(strategy)
        phi = FEATURES_BY_KIND[rule.feature_kind](self.model, self.tokenizer, pairs, self.config)
        if rule.needs_weights:  # ADPO+: x_i = √w_i·φ_i, w_i = μ_i(1 − μ_i) from the current implicit-reward margin
            margins = implicit_reward_margins(self.model, self.tokenizer, pairs, self.config)
            phi = phi * plugin_weights(margins).sqrt().unsqueeze(-1).to(phi.dtype)
        self.set_features([pair.pair_id for pair in pairs], phi)
        return int(self.blocked_mask().sum())

    def reward_margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> Tensor:
        """Implicit-reward margins h_i = r_θ(x, y1) − r_θ(x, y2) under the version held → [N_w]."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        self.require_version(policy_version)
        return implicit_reward_margins(self.model, self.tokenizer, pairs, self.config)

    def set_features(self, pair_ids: Sequence[str], rows: Tensor) -> int:
        """Hold precomputed rows (an offline pool's φ) instead of featurising; persisted for restarts."""
        self.pair_ids, self.rows = list(pair_ids), rows
        with atomic_output(self.state_file) as staging:
            torch.save({"pair_ids": self.pair_ids, "rows": rows, "version": self.policy_version,
                        "adapter_dir": self._adapter_dir and str(self._adapter_dir)}, staging)
        return len(self.pair_ids)

    def begin_round(self, v_inv: Tensor) -> Proposal | None:
        """Score every row under V⁻¹ [k, k] (zero rows blocked) and propose the local argmax."""
        if self.model is None:
            raise ActorNotReadyError(f"feature worker {self.rank} is not set up")
        self.scores = score_shard(self.rows, v_inv)
        self.taken = self.blocked_mask()
        return self._proposal()

    def apply_update(self, z: Tensor, c: float, taken_index: int | None) -> Proposal | None:
        """s_i ← s_i − (x_iᵀz)²/c after the selector's Sherman–Morrison step; mark our pick; propose again."""
        if taken_index is not None:
            self.taken[taken_index] = True
        self.scores = update_shard_scores(self.scores, self.rows, z, c)
        return self._proposal()

    def replay(self, v_inv: Tensor, history: Sequence[tuple[Tensor, float, int | None]]) -> Proposal | None:
        """Rebuild this round's cached scores after a restart: ``begin_round`` then every update so far."""
        proposal = self.begin_round(v_inv)
        for z, c, taken_index in history:
            proposal = self.apply_update(z, c, taken_index)
        return proposal

    def _proposal(self) -> Proposal | None:
        best = shard_argmax(self.scores, self.taken)
        if best is None:
            return None
        index, score = best
        return index, score, self.pair_ids[index], self.rows[index]

    def shard_info(self) -> tuple[int, int, int]:
        """(rows held, zero rows, feature dimension k)."""
        return len(self.pair_ids), int(self.blocked_mask().sum()), self.rows.shape[1]

    def blocked_mask(self) -> Tensor:
        """[N_w] bool: rows that carry no information (all-zero features) and are never picked."""
        return self.rows.abs().amax(dim=1) == 0

    def row(self, index: int) -> tuple[str, Tensor]:
        """(pair id, feature row) of local row ``index``."""
        return self.pair_ids[index], self.rows[index]


class FeatureWorkerGroup:
    """``features.num_workers`` feature workers with ``cluster.features`` resources.

    Args:
        config: the whole config.
        state_dir: where workers persist their shard for restarts (node-local disk is enough on one node;
            shared storage on a cluster).
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
            max_restarts=2,
            name="features",
        )

    @property
    def workers(self) -> list[Any]:
        return self.group.actors

    def setup(self) -> None:
        self.group.setup()

    def load_adapter(self, adapter: AdapterPayload | Any, version: int) -> None:
        """Serve ``version``: a payload, its object ref or a shared-storage path."""
        self._adapter = (adapter, version)
        self.group.call_all("load_adapter", adapter, version)

    def featurize(self, pairs: Sequence[CandidatePair], policy_version: int, strategy: str) -> int:
        """Shard ``pairs`` contiguously across workers and featurise; returns the number of zero-feature pairs."""
        shards = shard_evenly(list(pairs), len(self.workers))
        return sum(self.group.call_each("featurize", [(s, policy_version, strategy) for s in shards]))

    def reward_margins(self, pairs: Sequence[CandidatePair], policy_version: int) -> Tensor:
        """h_i for every pair, computed on the workers' shards → [N] in input order."""
        shards = [shard for shard in shard_evenly(list(pairs), len(self.workers)) if shard]
        return torch.cat(self.group.map_shards("reward_margins", shards, policy_version))

    def set_features(self, pair_ids: Sequence[str], phi: Tensor) -> None:
        """Distribute precomputed features [N, k] (offline pools, benchmarks) in contiguous shards."""
        id_shards = shard_evenly(list(pair_ids), len(self.workers))
        bounds = [0]
        for shard in id_shards:
            bounds.append(bounds[-1] + len(shard))
        spans = zip(id_shards, bounds, bounds[1:], strict=False)
        self.group.call_each("set_features", [(ids, phi[start:stop]) for ids, start, stop in spans])

    def shutdown(self) -> None:
        self.group.shutdown()
