"""Setting up an active-loop run: run directory, early checks, Ray connection, and the Ray-backed parts.

Everything that can fail on bad input is checked before any actor starts — plugin names (strategy,
loss, oracle kind) when the config loads (:mod:`system.config`), input files here — so a typo costs one
error line rather than a cluster start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray

from system.config import Config, dump_config, load_config
from system.data import load_preferences, read_prompts
from system.errors import ConfigError
from system.fileio import atomic_write_bytes, atomic_write_text
from system.generation import evaluation_params
from system.loop import LoopParts, OfflinePool, offline_pool
from system.ports import ensure_port_free
from system.run_state import RoundState, check_resume_config, load_round_state
from system.types import PromptRecord

logger = logging.getLogger(__name__)


def check_config(config: Config) -> None:
    """Fail fast on missing input files and on an oracle the loop cannot use (registry names were checked when
    the config loaded)."""
    if config.oracle.kind == "human" and config.loop.mode == "online" and config.loop.num_eval_prompts:
        raise ConfigError("oracle.kind: 'human' has no reward function to evaluate generations with; "
                          "set loop.num_eval_prompts=0 or use a machine oracle")
    for key in ("prompts_path", "eval_prompts_path", "pool_path"):
        value = getattr(config.loop, key)
        if value is not None and not Path(value).exists():
            raise ConfigError(f"loop.{key}: {value} does not exist")


def load_prompt_sets(config: Config) -> tuple[list[PromptRecord], list[PromptRecord]]:
    """Training prompts and up to ``loop.num_eval_prompts`` held-out prompts (the tail of the training set
    when no ``loop.eval_prompts_path`` is given; those prompts are then kept out of training)."""
    prompts = read_prompts(config.loop.prompts_path)
    count = config.loop.num_eval_prompts
    if config.loop.eval_prompts_path is not None:
        return prompts, read_prompts(config.loop.eval_prompts_path)[:count]
    if count >= len(prompts):
        raise ConfigError(f"loop.num_eval_prompts={count}: needs fewer than the {len(prompts)} training prompts")
    return (prompts[: len(prompts) - count], prompts[len(prompts) - count :]) if count else (prompts, [])


def load_pool(config: Config) -> OfflinePool | None:
    """Offline mode's fixed pool (``loop.pool_path``), None online."""
    if config.loop.mode != "offline" or config.loop.pool_path is None:
        return None
    return offline_pool(load_preferences(config.loop.pool_path), config.loop.seed)


def prepare_run_dir(config: Config, resume: Path | None) -> tuple[Path, RoundState]:
    """The run directory with ``config.yaml`` written, and the state to start from.

    A fresh run in a directory that holds an earlier run's rounds replaces them. A resumed run must keep
    every setting that changes results (:func:`system.run_state.check_resume_config`).
    """
    run_dir = Path(resume) if resume is not None else Path(config.loop.run_dir)
    state = None
    if resume is not None:
        check_resume_config(load_config(run_dir / "config.yaml"), config, run_dir)
        state = load_round_state(run_dir)
    if resume is None and run_dir.exists():
        for old in [*run_dir.glob("round_*"), run_dir / "state.json", run_dir / "reference_responses.json"]:
            shutil.rmtree(old) if old.is_dir() else old.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))
    return run_dir, state or RoundState()


def check_oracle_port(config: Config) -> None:
    """On a Ray this command starts itself, stop before starting it when ``oracle.port`` is taken
    (a cluster's port lives on its head node, where Serve reports a conflict itself)."""
    if config.cluster.address is None and not os.environ.get("RAY_ADDRESS"):
        ensure_port_free(config.oracle.host, config.oracle.port, "oracle.port")


@contextmanager
def ray_session(config: Config) -> Iterator[str | None]:
    """Connect to ``cluster.address`` (or ``$RAY_ADDRESS`` under ``ray job submit``), else start a local
    Ray in-process; yields the dashboard URL (None without one). Only a Ray started here is shut down."""
    address = config.cluster.address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        yield None
        return
    if address:
        context = ray.init(address=address, runtime_env=config.cluster.runtime_env or None)
    else:
        context = start_local_ray(config)
    stop_on_sigterm()
    try:
        url = context.dashboard_url
        yield f"http://{url}" if url else None
    finally:
        ray.shutdown()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def stop_on_sigterm() -> None:
    """SIGTERM stops a command the way Ctrl-C does: every ``finally`` runs (actors, Serve and the Ray this command
    started are shut down) and the CLI exits 130. Replaces Ray's driver handler, a bare ``sys.exit``."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


SERVE_PROXY_PATIENCE = {
    "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S": "60",
    "RAY_SERVE_PROXY_HEALTH_CHECK_TIMEOUT_S": "60",
}
"""Serve's HTTP proxy gets 5–10 s to answer health checks by default; on a loaded 2-core laptop it can miss
them and be killed while the loop starts. The in-process cluster inherits these longer limits."""


def start_local_ray(config: Config, attempts: int = 3) -> Any:
    """``ray.init`` of an in-process cluster, retried: on an overloaded machine the raylet can miss Ray's
    fixed 30 s registration window, and a second try usually makes it."""
    for name, seconds in SERVE_PROXY_PATIENCE.items():
        os.environ.setdefault(name, seconds)
    for attempt in range(1, attempts + 1):
        try:
            return ray.init(
                num_cpus=config.cluster.num_cpus,
                include_dashboard=config.cluster.include_dashboard,
                dashboard_host=config.cluster.dashboard_host,
            )
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this time-out
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            logger.warning("local Ray did not start (attempt %d/%d): %s; retrying", attempt, attempts, exc)
            ray.shutdown()
    raise AssertionError("unreachable")


def evaluation_generator(fleet: Any, config: Config) -> Any:
    """``respond(prompts, version) -> [response]``: the fleet's evaluation responses, prompt by prompt
    (greedy, or ``loop.eval_samples_per_prompt`` seeded samples per prompt)."""
    params = evaluation_params(config.generation, config.loop.eval_samples_per_prompt)

    def respond(prompts: Sequence[PromptRecord], version: int) -> list[str]:
        return [candidate.response for candidate in fleet.generate(prompts, policy_version=version, params=params)]

    return respond


class SelectionParts:
    """Feature workers + selector actor behind the loop's :class:`~system.loop.PairSelector` interface.

    The selector checkpoints its design state to ``checkpoint`` after every round; the loop copies it
    into the round directory, and :meth:`restore` puts the copy of the last finished selection back
    before the actor starts, so a resumed run continues from exactly that V⁻¹.
    """

    def __init__(self, config: Config, run_dir: Path) -> None:
        from actors.features import FeatureWorkerGroup
        from actors.selector import Selector

        self.config = config
        self.checkpoint = run_dir / "selector" / "design.pt"
        self.features = FeatureWorkerGroup(config, run_dir / "features")
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

    def save_state(self, path: Path) -> None:
        atomic_write_bytes(path, self.checkpoint.read_bytes())

    def shutdown(self) -> None:
        self.selector.shutdown()
        self.features.shutdown()


class RayParts:
    """Starts the loop's Ray-backed parts (oracle service, generation fleet, feature workers + selector,
    trainer) and shuts down what it started."""

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self._started: list[Any] = []

    def start(self, state: RoundState) -> LoopParts:
        from actors.generation import GenerationFleet
        from actors.oracle import start_oracle_service, stop_oracle_service
        from actors.trainer import Trainer
        from actors.weights import broadcast_adapter
        from system.oracle_client import OracleClient

        config = self.config
        fleet = GenerationFleet(config)
        selection = SelectionParts(config, self.run_dir)
        selection.restore(state.selector_state_path)
        self._started += [stop_oracle_service, fleet.shutdown, selection.shutdown]
        url = start_oracle_service(config)
        with ThreadPoolExecutor(max_workers=2) as pool:  # actor start-ups overlap; each blocks until ready
            for future in [pool.submit(fleet.setup), pool.submit(selection.setup)]:
                future.result()
        oracle = OracleClient.from_config(config.oracle, base_url=url)
        self._started.append(oracle.close)

        def sync(adapter_dir: Path, version: int) -> None:
            broadcast_adapter(adapter_dir, version, [fleet, selection])

        return LoopParts(fleet=fleet, selector=selection, oracle=oracle, trainer=Trainer(config),
                         respond=evaluation_generator(fleet, config), sync=sync)

    def shutdown(self) -> None:
        for stop in reversed(self._started):
            try:
                stop()
            except Exception:  # noqa: BLE001 - best effort while tearing down; the loop's own error wins
                logger.warning("shutting down %s failed", stop, exc_info=True)
