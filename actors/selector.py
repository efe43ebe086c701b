"""The selector actor: builds the round's design state V⁻¹ and runs a strategy's pick step over the workers.

Every round starts from V = λI + Σ_j x_j x_jᵀ over EVERY pair labelled in earlier rounds, with x_j
recomputed by the feature workers under the current (synced) adapter (ActiveDPO paper, Prop. 1): old picks do
not keep the feature — or, for ADPO+, the weight w = μ(1 − μ) — they had when picked. The round's picks
then update V one at a time.

Traffic for that rebuild: the workers send their labelled rows (L rows of k float32, L·k·4 bytes in all)
and the selector forms the Gram itself (O(L·k²), one Cholesky). The alternative — each of the W workers
sending its partial Gram Σ x xᵀ (k × k float64, W·k²·8 bytes) — is independent of L but far larger at
the ActiveDPO paper's sizes: k = 8192, 50 labels per round, after 10 rounds L = 500 → rows 16.4 MB vs
W = 4 partial Grams 2.1 GB. Rows stay smaller while L < 2·W·k (65,536 labels for W = 4, k = 8192).

One greedy pick (docs/method.md, "Distributed greedy selection"), through :class:`WorkerPool` — the
:class:`~system.selection.shards.ShardedPool` over the workers that every strategy's ``pick`` receives:
every worker proposes its best row (global index, score, x row); the selector keeps
:func:`~system.selection.shards.merge_argmax`, folds the winner into V⁻¹ (``DesignState.update`` → (z, c))
and broadcasts (z, c) once through the object store; each worker updates its cached scores with one
mat-vec and proposes again. Per pick the selector sends z (k float64) to each worker and receives W rows
(k each): O(W·k) bytes, never O(N·k). V⁻¹ leaves the selector once per round to seed the workers' scores.

After every round the selector checkpoints its record (round, selected ids, the round's final V) with an
atomic write and reloads it in ``setup()``. A selector that Ray restarts mid-round reruns the round from
the workers' rows, which gives the same picks. A feature worker that dies mid-round is restarted by Ray,
reloads its rows from disk, and gets the round's (z, c) history replayed.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
import torch
from torch import Tensor

from actors.features import FeatureWorkerGroup
from actors.group import ACTOR_FAILURES, ActorGroup, wait_restarted
from actors.placement import PlacementWait
from system.config import Config
from system.errors import SelectionError
from system.fileio import atomic_output
from system.run_state import load_state_file
from system.selection import DesignState, Proposal, select_round, selection_record
from system.selection.shards import Ranked, RowScorer, merge_ranked, selection_device
from system.types import SelectionResult

logger = logging.getLogger(__name__)


class WorkerPool:
    """The :class:`~system.selection.shards.ShardedPool` over Ray feature workers (worker w holds the global
    rows ``offsets[w]`` … in order); counts the bytes of every pick and the worker restarts it waited for
    (each for at most ``restart_timeout_s``)."""

    def __init__(self, workers: list[Any], restart_timeout_s: float) -> None:
        self.workers = workers
        self.restart_timeout_s = restart_timeout_s
        self.restarts = 0
        self.bytes_moved = 0
        infos = [self.call(rank, "shard_info") for rank in range(len(workers))]
        self.pair_ids: list[str] = [pair_id for info in infos for pair_id in info[0]]
        self._blocked = torch.cat([info[1] for info in infos])
        self.dim = max(int(info[2]) for info in infos)  # 0 for a worker whose shards were empty
        sizes = [len(info[0]) for info in infos]
        self.offsets = [sum(sizes[:rank]) for rank in range(len(sizes))]
        self._v_ref: Any = None
        self._history: list[tuple[Tensor, float, int]] = []
        self._proposals: list[Proposal | None] = []

    def call(self, rank: int, method: str, *args: Any) -> Any:
        """A stateless query of worker ``rank``, waiting for Ray to restart it if it died."""
        worker = self.workers[rank]
        try:
            return ray.get(getattr(worker, method).remote(*args))
        except ACTOR_FAILURES:
            self.restarts += 1
            self._wait_restarted(rank)
            return ray.get(getattr(worker, method).remote(*args))

    def _wait_restarted(self, rank: int) -> None:
        """Wait for Ray to restart worker ``rank`` and set it up again (it then reloads its shard from disk)."""
        wait_restarted(self.workers[rank], lambda actor: actor.setup.remote(), f"feature worker {rank}",
                       self.restart_timeout_s)

    def labelled_rows(self) -> Tensor:
        """Rows [L, k] of every pair labelled in earlier rounds, under the workers' current adapter."""
        shards = [self.call(rank, "labelled_rows") for rank in range(len(self.workers))]
        return torch.cat([rows.reshape(-1, self.dim) for rows in shards])

    def blocked(self) -> Tensor:
        return self._blocked

    def row(self, index: int) -> Tensor:
        rank = bisect.bisect_right(self.offsets, index) - 1
        return self.call(rank, "row", index - self.offsets[rank])

    def begin(self, v_inv: Tensor) -> list[Proposal | None]:
        self._v_ref = ray.put(v_inv.cpu().clone())  # V⁻¹ may sit on the selector's GPU; workers place it
        self._history = []
        refs = [w.begin_round.remote(self._v_ref, offset) for w, offset in zip(self.workers, self.offsets, strict=True)]
        return self._gather(refs)

    def top(self, scorer: RowScorer, budget: int) -> list[Ranked]:
        """Every worker ranks its rows with ``scorer`` (sent once, through the object store); the best ``budget``."""
        scorer_ref = ray.put(scorer)
        refs = [w.top_rows.remote(scorer_ref, budget, offset) for w, offset in zip(self.workers, self.offsets,
                                                                                    strict=True)]
        ranked = []
        for rank, ref in enumerate(refs):
            try:
                ranked.append(ray.get(ref))
            except ACTOR_FAILURES:
                ranked.append(self.call(rank, "top_rows", scorer_ref, budget, self.offsets[rank]))
        return merge_ranked(ranked, budget)

    def update(self, z: Tensor, c: float, taken: int) -> list[Proposal | None]:
        z = z.cpu()
        self._history.append((z, c, taken))
        received = sum(proposal[2].nbytes for proposal in self._proposals if proposal is not None)
        self.bytes_moved += z.nbytes * len(self.workers) + received
        z_ref = ray.put(z)  # one copy in the object store, read by every worker
        return self._gather([w.apply_update.remote(z_ref, c, taken) for w in self.workers])

    def _gather(self, refs: list[Any]) -> list[Proposal | None]:
        """Proposals of every worker; one that died is waited for, reloaded from disk and replayed to this pick."""
        proposals = []
        for rank, ref in enumerate(refs):
            try:
                proposals.append(ray.get(ref))
            except ACTOR_FAILURES:
                self.restarts += 1
                logger.warning("feature worker %d died mid-round; restoring it and replaying %d updates", rank,
                               len(self._history))
                self._wait_restarted(rank)
                replay = self.workers[rank].replay.remote(self._v_ref, self.offsets[rank], self._history)
                proposals.append(ray.get(replay))
        self._proposals = proposals
        return proposals


class SelectorActor:
    """The role inside the Ray actor: the round's design state + a strategy's pick step over the workers."""

    def __init__(self, rank: int, config: Config, checkpoint_path: str) -> None:
        self.config = config
        self.checkpoint_path = Path(checkpoint_path)
        self.state: DesignState | None = None
        self.round = 0
        self.selected_ids: list[str] = []
        self.worker_restarts = 0

    def setup(self) -> int:
        """Reload the last checkpoint when there is one; returns the next round index."""
        if self.checkpoint_path.exists():
            saved = load_state_file(self.checkpoint_path)
            design = saved["design"]
            self.state = DesignState(int(design["dim"]), float(design["reg"]),
                                     device=selection_device(self.config.selection.device))
            self.state.load_state_dict(design)
            self.round, self.selected_ids = saved["round"], saved["selected_ids"]
            logger.info("selector restored after round %d (%d pairs selected)", self.round, len(self.selected_ids))
        return self.round

    def _checkpoint(self) -> None:
        assert self.state is not None
        with atomic_output(self.checkpoint_path) as staging:
            torch.save(selection_record(self.state, self.round, self.selected_ids), staging)

    def select(self, workers: list[Any], budget: int, strategy: str, round_index: int) -> SelectionResult:
        """Pick ``budget`` pairs from the workers' shards with ``strategy``; checkpoint; return them in pick order.

        V starts as λI + Σ x xᵀ over the workers' labelled rows; the strategy's seed is
        ``selection.seed + round_index``, so a seeded strategy draws differently every round.
        """
        if round_index < self.round:
            raise SelectionError(f"round {round_index} was already selected (selector is at round {self.round})")
        pool = WorkerPool(workers, self.config.cluster.retries.restart_timeout_s)
        selection = self.config.selection
        result, self.state = select_round(pool, pool.pair_ids, pool.labelled_rows(), budget, strategy, round_index,
                                          selection.reg, selection.refactor_every, selection.seed,
                                          selection_device(selection.device))
        self.worker_restarts += pool.restarts
        self.selected_ids.extend(result.pair_ids)
        self.round = round_index + 1
        self._checkpoint()
        extra = {"worker_restarts": float(self.worker_restarts),
                 "bytes_per_pick": pool.bytes_moved / max(1, len(result.pair_ids))}
        return replace(result, extra={**result.extra, **extra})

    def design_state(self) -> dict[str, Any]:
        """The design state and selection record (for inspection and tests)."""
        assert self.state is not None
        return selection_record(self.state, self.round, self.selected_ids)


class Selector:
    """Driver-side handle of the selector actor (``cluster.selector`` resources, restarted by Ray on failure).

    Args:
        config: the whole config.
        checkpoint_path: where the design state is written after every round and read back on restart.
    """

    def __init__(self, config: Config, checkpoint_path: str | Path) -> None:
        self.config = config
        Path(checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        self.group = ActorGroup(SelectorActor, 1, config.cluster.selector, actor_args=(config, str(checkpoint_path)),
                                placement_wait=PlacementWait.from_config(config), retries=config.cluster.retries,
                                name="selector")

    def setup(self) -> int:
        """Start the actor; returns the next round index (from its checkpoint)."""
        return int(self.group.setup()[0])

    @property
    def actor(self) -> Any:
        return self.group.actors[0]

    def select(self, features: FeatureWorkerGroup, budget: int | None = None, strategy: str | None = None,
               round_index: int = 0) -> SelectionResult:
        """Run one round of selection over the feature workers (defaults from ``selection``).

        When the selector itself dies mid-round, Ray restarts it from the last round's checkpoint and
        the round is run again, which gives the same picks.
        """
        args = (features.workers, budget or self.config.selection.budget, strategy or self.config.selection.strategy,
                round_index)
        try:
            return ray.get(self.actor.select.remote(*args))
        except ACTOR_FAILURES:
            logger.warning("selector died mid-round %d; rerunning the round from its checkpoint", round_index)
            wait_restarted(self.actor, lambda actor: actor.setup.remote(), "selector",
                           self.config.cluster.retries.restart_timeout_s)
            return ray.get(self.actor.select.remote(*args))

    def design_state(self) -> dict[str, Any]:
        return ray.get(self.actor.design_state.remote())

    def shutdown(self) -> None:
        self.group.shutdown()
