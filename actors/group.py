"""N Ray actors of one role: resources from config, a placement group, sharded calls.

Every role (generation, features, selector, training) is a plain Python class with a cheap
``__init__`` and an explicit ``setup()``. :class:`ActorGroup` turns it into ``num_actors`` Ray
actors that ask for ``config.cluster.<group>`` resources, places actor ``i`` in bundle ``i`` of a
placement group (its own, or one shared with another role under ``colocate``: see
:mod:`actors.placement`), cuts work into one shard per actor, gathers the results in shard order,
and reruns a shard whose actor died on another live actor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
from ray.util.placement_group import PlacementGroup, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from actors.placement import PlacementWait, bundle_for, reserve
from system.config import ResourceSpec, RetryConfig
from system.errors import ActorFailureError, ActorGoneError

logger = logging.getLogger(__name__)


class ActorNotReadyError(RuntimeError):
    """Raised by a role asked to work before ``setup()`` ran (e.g. right after Ray restarted it)."""


ACTOR_FAILURES = (RayActorError, ActorDiedError, ActorUnavailableError, ActorNotReadyError)


def wait_restarted(actor: Any, call: Callable[[Any], Any], name: str, timeout_s: float) -> Any:
    """``ray.get(call(actor))`` once Ray has restarted ``actor`` (retrying while it is still coming back).

    ``name`` (e.g. ``generation actor 1``) opens the error's one line.

    Raises:
        ActorGoneError: the actor is dead for good (its restarts, ``cluster.retries.max_restarts``, are used up).
        ActorFailureError: it did not come back within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return ray.get(call(actor))
        except (ActorUnavailableError, ActorNotReadyError) as exc:
            if time.monotonic() > deadline:
                raise ActorFailureError(
                    f"{name} did not come back within {timeout_s:.0f} s; check the cluster's free resources (ray "
                    f"status), then rerun or raise cluster.retries.restart_timeout_s"
                ) from exc
            time.sleep(0.5)
        except RayActorError as exc:
            raise ActorGoneError(
                f"{name} died and its restarts (cluster.retries.max_restarts) are used up; see its log under "
                f"/tmp/ray/session_latest/logs (out of memory?), then rerun or raise cluster.retries.max_restarts"
            ) from exc


class ActorGroup:
    """``num_actors`` Ray actors running ``actor_cls``, each asking for ``spec``'s resources.

    Args:
        actor_cls: plain class with ``setup()``; its constructor receives ``(rank, *actor_args)``.
        num_actors: how many actors.
        spec: Ray resources per actor (``config.cluster.<group>``).
        actor_args: further constructor arguments (the config, usually).
        placement_group: a group reserved elsewhere (colocated roles share one); bundle ``rank`` hosts actor ``rank``.
            Without one, :meth:`setup` reserves a group of ``num_actors`` bundles of ``spec`` for this group alone.
        placement_wait: how long that reservation waits for nodes and for its grant.
        retries: how often Ray restarts a dead actor, how often a call is tried, how long a restart is waited for
            (``config.cluster.retries``).
        on_restart: called with a restarted actor's handle, returns the object ref(s) to wait for before the
            actor takes more work; default ``setup()`` (stateful roles also reload weights or state).
        name: label in logs; ``cluster.<name>`` names the resources in placement errors.
    """

    def __init__(
        self,
        actor_cls: type,
        num_actors: int,
        spec: ResourceSpec,
        actor_args: Sequence[Any] = (),
        placement_group: PlacementGroup | None = None,
        placement_wait: PlacementWait = PlacementWait(),
        retries: RetryConfig = RetryConfig(),
        on_restart: Callable[[Any], Any] | None = None,
        name: str = "actors",
    ) -> None:
        self.actor_cls = actor_cls
        self.num_actors = num_actors
        self.spec = spec
        self.actor_args = tuple(actor_args)
        self.name = name
        self.retries = retries
        self.on_restart = on_restart or (lambda actor: actor.setup.remote())
        self._dead: set[int] = set()
        self._placement_group = placement_group
        self._owns_placement_group = False
        self._placement_wait = placement_wait
        self.actors: list[Any] = []

    def setup(self) -> list[Any]:
        """Start the actors (placement group first); returns what each ``setup()`` returned.

        Raises:
            ConfigError: the cluster has no room for the actors' resources (see :func:`actors.placement.reserve`).
            ActorFailureError: the placement group was not granted in time, or an actor kept dying in ``setup()``
                (bounded by ``cluster.retries``).
        """
        if self._placement_group is None:
            self._placement_group = reserve([bundle_for(self.spec)] * self.num_actors, f"cluster.{self.name}",
                                            self._placement_wait)
            self._owns_placement_group = True
        remote_cls = ray.remote(self.actor_cls)
        for rank in range(self.num_actors):
            options: dict[str, Any] = {
                "num_cpus": self.spec.num_cpus,
                "num_gpus": self.spec.num_gpus,
                "resources": dict(self.spec.resources),
                "max_restarts": self.retries.max_restarts,
                "max_concurrency": 1,
            }
            if self.spec.memory_gb:
                options["memory"] = int(self.spec.memory_gb * 1024**3)
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self._placement_group, placement_group_bundle_index=rank
            )
            self.actors.append(remote_cls.options(**options).remote(rank, *self.actor_args))
        ready = self.call_each("setup", [()] * self.num_actors)  # an actor that dies starting is restarted, bounded
        logger.info("%s: %d actors ready (%s)", self.name, self.num_actors, self.spec.model_dump())
        return ready

    def call_all(self, method: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Run ``method(*args, **kwargs)`` on every live actor; results in rank order.

        The first call to fail raises at once, whatever its rank: actors in a collective with a dead one would
        otherwise keep the caller waiting on them.
        """
        refs = [getattr(self.actors[rank], method).remote(*args, **kwargs) for rank in self._live_ranks()]
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready[0])
        return ray.get(refs)

    def call_each(self, method: str, per_actor_args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Run ``method(*per_actor_args[i])`` on the ``i``-th live actor; results in that order.

        Each actor keeps its own shard, so a call whose actor dies is not moved: once Ray has restarted
        the actor and ``on_restart`` has run, the same call reruns on it (``method`` must be idempotent).

        Raises:
            ActorFailureError: a call failed ``retries.max_attempts`` times, or its actor stayed dead or did not come
                back in time.
        """
        ranks = self._live_ranks()
        calls = list(zip(ranks, per_actor_args, strict=True))
        results: list[Any] = [None] * len(calls)
        attempts = [0] * len(calls)
        pending = {getattr(self.actors[rank], method).remote(*args): i for i, (rank, args) in enumerate(calls)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            rank, args = calls[i]
            try:
                results[i] = ray.get(ready[0])
            except ACTOR_FAILURES as exc:
                attempts[i] += 1
                self._check_attempts(method, rank, attempts[i], exc)
                self._revive(rank)
                if rank in self._dead:
                    raise ActorFailureError(f"{self.name}: actor {rank} died during {method} and its restarts are "
                                            f"used up; see its log under /tmp/ray/session_latest/logs, then rerun "
                                            f"or raise cluster.retries.max_restarts") from exc
                pending[getattr(self.actors[rank], method).remote(*args)] = i
        return results

    def _check_attempts(self, method: str, rank: int, attempts: int, exc: Exception) -> None:
        """Log a failed call; raise once ``retries.max_attempts`` calls of it failed."""
        if attempts >= self.retries.max_attempts:
            raise ActorFailureError(
                f"{self.name}: {method} failed {attempts} times (last on actor {rank}: {type(exc).__name__}); "
                f"see the actor logs under /tmp/ray/session_latest/logs (out of memory?), then rerun or raise "
                f"cluster.retries.max_attempts"
            ) from exc
        logger.warning("%s: actor %d failed in %s (%s); retrying", self.name, rank, method, type(exc).__name__)

    def map_shards(self, method: str, shards: Sequence[Any], *args: Any) -> list[Any]:
        """Run ``method(shard, *args)`` for each shard and wait: :meth:`submit_shards` then its ``result()``."""
        return self.submit_shards(method, shards, *args).result()

    def submit_shards(self, method: str, shards: Sequence[Any], *args: Any) -> ShardCall:
        """Send ``method(shard, *args)`` for each shard, shard ``i`` to actor ``i mod n``, and return at once.

        The calls queue on the actors behind any earlier ones, so a caller can submit work, do something
        else in the driver (or submit to another group) and collect it with ``result()`` (OpenRLHF's
        ``async_*`` calls).
        """
        return ShardCall(self, method, list(shards), args)

    def _live_ranks(self) -> list[int]:
        return [rank for rank in range(len(self.actors)) if rank not in self._dead]

    def _submit(
        self, method: str, shard: Any, args: tuple[Any, ...], index: int, preferred_rank: int
    ) -> dict[ray.ObjectRef, tuple[int, int]]:
        """Send shard ``index`` to the first live actor at or after ``preferred_rank`` (cyclically)."""
        live = self._live_ranks()
        rank = next((r for r in live if r >= preferred_rank % len(self.actors)), live[0])
        return {getattr(self.actors[rank], method).remote(shard, *args): (index, rank)}

    def _revive(self, rank: int) -> None:
        """Wait for Ray to restart actor ``rank`` and run ``on_restart`` on it; drop it when it stays dead.

        Raises:
            ActorGoneError: it stays dead and was the last live actor of the group.
            ActorFailureError: it did not come back within ``retries.restart_timeout_s``.
        """
        try:
            wait_restarted(self.actors[rank], self.on_restart, f"{self.name} actor {rank}",
                           self.retries.restart_timeout_s)
        except ActorGoneError:
            self._dead.add(rank)
            if not self._live_ranks():
                raise
            logger.warning("%s: actor %d is gone for good; %d actors left", self.name, rank, len(self._live_ranks()))

    def shutdown(self) -> None:
        """Kill the actors and release a placement group this group reserved."""
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self._owns_placement_group and self._placement_group is not None:
            remove_placement_group(self._placement_group)
            self._placement_group = None


class ShardCall:
    """Shard calls in flight on an :class:`ActorGroup`; ``result()`` waits for them, retrying failures.

    A shard whose actor dies is sent to the next live actor; a dead actor that Ray restarts gets
    ``on_restart`` (``setup()``) before it takes more work, one that stays dead leaves the group.
    """

    def __init__(self, group: ActorGroup, method: str, shards: list[Any], args: tuple[Any, ...]) -> None:
        self.group, self.method, self.shards, self.args = group, method, shards, args
        self.pending: dict[ray.ObjectRef, tuple[int, int]] = {}
        for index, shard in enumerate(shards):
            self.pending.update(group._submit(method, shard, args, index, index))

    def result(self) -> list[Any]:
        """The shards' results in shard order.

        Raises:
            ActorFailureError: a shard failed on ``retries.max_attempts`` actors, a dead actor did not come back in
                time, or every actor is dead for good.
        """
        group, pending = self.group, self.pending
        results: list[Any] = [None] * len(self.shards)
        attempts = [0] * len(self.shards)
        revived: set[int] = set()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, rank = pending.pop(ready[0])
            try:
                results[index] = ray.get(ready[0])
            except ACTOR_FAILURES as exc:
                attempts[index] += 1
                group._check_attempts(self.method, rank, attempts[index], exc)
                pending.update(group._submit(self.method, self.shards[index], self.args, index, rank + 1))
                if rank not in revived:
                    revived.add(rank)
                    group._revive(rank)
        return results
