"""The selector actor: holds the design state (V⁻¹, selected ids, round) and runs the distributed greedy.

One pick (science.md, "Distributed greedy selection"): every feature worker proposes its local
argmax (index, score, x row); the selector keeps :func:`~system.selection.shards.merge_argmax` of
the proposals, folds the winner into V⁻¹ (``DesignState.update`` → (z, c)), and broadcasts (z, c)
once through the object store; each worker updates its cached scores with one mat-vec and proposes
again. Per pick the selector sends z (k float64) and receives W rows (k each): O(W·k) bytes, never
O(N·k). V⁻¹ never leaves the selector except once per round to seed the workers' scores.

The design state is checkpointed after every round (atomic write) and reloaded in ``setup()``, so a
selector that Ray restarts continues where the last finished round left it. A feature worker that
dies mid-round is restarted by Ray, reloads its shard from disk, and gets the round's (z, c) history
replayed, so the round finishes with the same picks.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import ray
import torch
from torch import Tensor

from actors.features import FeatureWorkerGroup, Proposal
from actors.group import ACTOR_FAILURES, ActorGroup, wait_restarted
from system.config import Config
from system.errors import SelectionError
from system.fileio import atomic_output
from system.selection import DesignState, get_strategy, merge_argmax
from system.selection.strategies.dopt import AdpoPlusStrategy, DOptimalStrategy
from system.selection.strategies.uniform import UniformStrategy
from system.types import SelectionResult

logger = logging.getLogger(__name__)

History = list[tuple[Tensor, float, int, int]]
"""This round's updates so far: (z, c, winning worker, its local index)."""


class SelectorActor:
    """The role inside the Ray actor: design state + the global greedy loop over the workers."""

    def __init__(self, rank: int, config: Config, checkpoint_path: str) -> None:
        self.config = config
        self.checkpoint_path = Path(checkpoint_path)
        self.state: DesignState | None = None
        self.round = 0
        self.selected_ids: list[str] = []
        self.worker_restarts = 0
        self.bytes_moved = 0

    def setup(self) -> int:
        """Reload the last checkpoint when there is one; returns the next round index."""
        if self.checkpoint_path.exists():
            saved = torch.load(self.checkpoint_path, weights_only=False)
            design = saved["design"]
            self.state = DesignState(int(design["dim"]), float(design["reg"]))
            self.state.load_state_dict(design)
            self.round, self.selected_ids = saved["round"], saved["selected_ids"]
            logger.info("selector restored after round %d (%d pairs selected)", self.round, len(self.selected_ids))
        return self.round

    def _checkpoint(self) -> None:
        assert self.state is not None
        with atomic_output(self.checkpoint_path) as staging:
            torch.save({"design": self.state.state_dict(), "round": self.round,
                        "selected_ids": self.selected_ids}, staging)

    def _design(self, dim: int) -> DesignState:
        if self.state is None:
            selection = self.config.selection
            self.state = DesignState(dim, selection.reg, refactor_every=selection.refactor_every)
        if self.state.dim != dim:
            raise SelectionError(f"features have dimension {dim} but the design state has {self.state.dim}")
        return self.state

    def select(self, workers: list[Any], budget: int, strategy: str, round_index: int) -> SelectionResult:
        """Pick ``budget`` pairs from the workers' shards with ``strategy``; checkpoint; return them in pick order."""
        rule = get_strategy(strategy)
        if round_index < self.round:
            raise SelectionError(f"round {round_index} was already selected (selector is at round {self.round})")
        if not isinstance(rule, (DOptimalStrategy, AdpoPlusStrategy, UniformStrategy)):
            raise SelectionError(f"strategy {strategy!r} is not a greedy design; run it in-process (select_pairs)")
        infos = [self._call(worker, "shard_info") for worker in workers]
        state = self._design(infos[0][2])
        skipped = sum(info[1] for info in infos)
        selectable = sum(info[0] for info in infos) - skipped
        if budget > selectable:
            raise SelectionError(f"budget {budget} exceeds the {selectable} selectable pairs ({skipped} zero-norm)")
        self.bytes_moved = 0
        if isinstance(rule, UniformStrategy):
            pair_ids, scores = self._uniform(workers, budget, state, [info[0] for info in infos])
        else:
            pair_ids, scores = self._greedy(workers, budget, state)
        self.selected_ids.extend(pair_ids)
        self.round = round_index + 1
        self._checkpoint()
        return SelectionResult(
            pair_ids=tuple(pair_ids), scores=tuple(scores), strategy=rule.name, round=round_index,
            skipped_zero_norm=skipped,
            extra={"logdet": state.logdet(), "worker_restarts": float(self.worker_restarts),
                   "bytes_per_pick": self.bytes_moved / max(1, len(pair_ids))},
        )

    def _greedy(self, workers: list[Any], budget: int, state: DesignState) -> tuple[list[str], list[float]]:
        v_start_ref = ray.put(state.v_inv.clone())
        history: History = []
        proposals = self._gather(workers, [w.begin_round.remote(v_start_ref) for w in workers], v_start_ref, history)
        pair_ids: list[str] = []
        scores: list[float] = []
        for _ in range(budget):
            winner, index, score = merge_argmax([(r, p[0], p[1]) for r, p in enumerate(proposals) if p is not None])
            _, _, pair_id, row = proposals[winner]
            pair_ids.append(pair_id)
            scores.append(score)
            z, c = state.update(row)
            history.append((z, c, winner, index))
            self.bytes_moved += z.nbytes * len(workers) + sum(p[3].nbytes for p in proposals if p is not None)
            z_ref = ray.put(z)  # one copy in the object store, read by every worker
            refs = [w.apply_update.remote(z_ref, c, index if r == winner else None) for r, w in enumerate(workers)]
            proposals = self._gather(workers, refs, v_start_ref, history)
        return pair_ids, scores

    def _uniform(
        self, workers: list[Any], budget: int, state: DesignState, sizes: list[int]
    ) -> tuple[list[str], list[float]]:
        """Seeded uniform picks over the concatenated index space (as single-process ``random``); V still updated."""
        blocked = torch.cat([self._call(worker, "blocked_mask") for worker in workers])
        offsets = [sum(sizes[:rank]) for rank in range(len(sizes))]
        generator = torch.Generator().manual_seed(self.config.selection.seed)
        allowed = torch.nonzero(~blocked).flatten()
        order = allowed[torch.randperm(allowed.numel(), generator=generator)[:budget]].tolist()
        pair_ids, scores = [], []
        for global_index in order:
            rank = max(r for r in range(len(workers)) if offsets[r] <= global_index)
            pair_id, row = self._call(workers[rank], "row", global_index - offsets[rank])
            scores.append(float(state.score(row.unsqueeze(0))[0]))
            state.update(row)
            pair_ids.append(pair_id)
        return pair_ids, scores

    def _call(self, worker: Any, method: str, *args: Any) -> Any:
        """A stateless query of one worker, waiting for Ray to restart it if it died."""
        try:
            return ray.get(getattr(worker, method).remote(*args))
        except ACTOR_FAILURES:
            self.worker_restarts += 1
            wait_restarted(worker, lambda actor: actor.setup.remote())
            return ray.get(getattr(worker, method).remote(*args))

    def _gather(self, workers: list[Any], refs: list[Any], v_start_ref: Any, history: History) -> list[Proposal | None]:
        """Proposals of every worker; one that died is waited for, reloaded from disk and replayed to this pick."""
        proposals = []
        for rank, ref in enumerate(refs):
            try:
                proposals.append(ray.get(ref))
            except ACTOR_FAILURES:
                self.worker_restarts += 1
                logger.warning("feature worker %d died mid-round; restoring it and replaying %d updates", rank,
                               len(history))
                wait_restarted(workers[rank], lambda actor: actor.setup.remote())
                own = [(z, c, index if winner == rank else None) for z, c, winner, index in history]
                proposals.append(ray.get(workers[rank].replay.remote(v_start_ref, own)))
        return proposals

    def design_state(self) -> dict[str, Any]:
        """The design state and selection record (for inspection and tests)."""
        assert self.state is not None
        return {"design": self.state.state_dict(), "round": self.round, "selected_ids": list(self.selected_ids)}


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
                                max_restarts=3, name="selector")

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
            wait_restarted(self.actor, lambda actor: actor.setup.remote())
            return ray.get(self.actor.select.remote(*args))

    def design_state(self) -> dict[str, Any]:
        return ray.get(self.actor.design_state.remote())

    def shutdown(self) -> None:
        self.group.shutdown()
