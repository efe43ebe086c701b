"""Setting up an active-loop run: run directory, early checks, and the Ray-backed parts (the Ray connection
itself is :mod:`jobs.ray_session`, shared by every job).

Everything that can fail on bad input is checked before any actor starts — plugin names (strategy,
loss, oracle kind) when the config loads (:mod:`system.config`), input files here — so a typo costs one
error line rather than a cluster start-up.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from system.config import Config, dump_config, load_config
from system.data import is_dataset, load_preferences, read_prompts
from system.errors import ConfigError, DataError
from system.fileio import atomic_write_text
from system.labels.render import load_guidelines
from system.loop import LoopParts, OfflinePool, offline_pool
from system.run_state import FEATURES_DIR, STATE_FILE, RoundState, check_resume_config, load_round_state
from system.types import PromptRecord

if TYPE_CHECKING:
    from system.oracle_client import LabelProgress

logger = logging.getLogger(__name__)


def check_config(config: Config) -> None:
    """Fail fast on missing input files and on an oracle the loop cannot use (registry names were checked when
    the config loaded)."""
    if config.oracle.kind == "human" and config.loop.mode == "online" and config.loop.num_eval_prompts:
        raise ConfigError("oracle.kind: 'human' has no reward function to evaluate generations with; "
                          "set loop.num_eval_prompts=0 or use a machine oracle")
    for key in ("prompts_path", "eval_prompts_path", "pool_path"):
        value = getattr(config.loop, key)
        if value is not None and not is_dataset(value) and not Path(value).exists():
            raise ConfigError(f"loop.{key}: {value} does not exist")
    load_guidelines(config.oracle.human.guidelines_path)  # an unreadable guidelines file stops here


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


RUN_OUTPUTS = ("round_*", STATE_FILE, "config.yaml", "reference_responses.json", "mpo_reference_samples.json",
               FEATURES_DIR, "report")
"""What a run writes into its directory (globs), and a fresh run with ``overwrite`` removes. The label store is not
among them: labels are never deleted here."""


def _existing_outputs(run_dir: Path) -> list[Path]:
    """The run outputs present in ``run_dir``, symlinks (even dangling or looping ones) included."""
    return [path for pattern in RUN_OUTPUTS for path in run_dir.glob(pattern) if os.path.lexists(path)]


def open_run_dir(config: Config, resume: Path | None, overwrite: bool = False) -> tuple[Path, RoundState]:
    """The run directory and the state to start from, read and checked without writing anything.

    A resumed run must have a readable ``state.json`` and keep every setting that changes results
    (:func:`system.run_state.check_resume_config`). A fresh run refuses a directory that holds an earlier run
    unless ``overwrite``.

    Raises:
        ConfigError: the directory holds a run and ``overwrite`` is off, is not a directory, or a resume would
            change results.
        DataError: a resumed run's ``state.json`` is missing or unreadable.
    """
    run_dir = Path(resume) if resume is not None else Path(config.loop.run_dir)
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise ConfigError(f"loop.run_dir: {run_dir} exists and is not a directory")
    if resume is not None:
        check_resume_config(load_config(run_dir / "config.yaml"), config, run_dir)
        state = load_round_state(run_dir)
        if state is None:
            raise DataError(f"--resume {run_dir}: no {STATE_FILE} there, so nothing to resume; start the run afresh "
                            f"with activealign run --config {run_dir / 'config.yaml'} --overwrite")
        return run_dir, state
    if run_dir.exists() and _existing_outputs(run_dir) and not overwrite:
        raise ConfigError(f"loop.run_dir: {run_dir} holds an earlier run; continue it with activealign run --resume "
                          f"{run_dir}, choose another --loop.run_dir, or replace its rounds with --overwrite")
    return run_dir, RoundState()


def write_run_dir(config: Config, run_dir: Path, fresh: bool) -> None:
    """Create ``run_dir`` with ``config.yaml``; a fresh run first removes an earlier run's outputs
    (:data:`RUN_OUTPUTS`), keeping the label store."""
    if fresh and run_dir.exists():
        for old in _existing_outputs(run_dir):
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", dump_config(config))


class RayParts:
    """Starts the loop's Ray-backed parts (oracle service, generation fleet, feature workers + selector,
    trainer group, whose workers start with the first round's training and stay up) and shuts down what it
    started. Each actor group runs in a placement group laid out by ``cluster.placement``
    (:mod:`actors.placement`); one the cluster cannot hold stops the start with one line naming its key."""

    def __init__(self, config: Config, run_dir: Path, on_label_progress: LabelProgress | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.on_label_progress = on_label_progress
        self._started: list[Any] = []

    def start(self, state: RoundState) -> LoopParts:
        from ray.util.placement_group import remove_placement_group

        from actors.generation import GenerationFleet
        from actors.oracle import start_oracle_service, stop_oracle_service
        from actors.placement import shared_placement_group
        from actors.selection import SelectionParts
        from actors.trainer_group import TrainerGroup
        from actors.weights import broadcast_adapter
        from system.oracle_client import OracleClient

        config = self.config
        shared = shared_placement_group(config)  # colocate: generation actor i and feature worker i in bundle i
        if shared is not None:
            self._started.append(lambda: remove_placement_group(shared))
        fleet = GenerationFleet(config, shared)
        selection = SelectionParts(config, self.run_dir, shared)
        selection.restore(state.selector_state_path)
        trainer = TrainerGroup(config)
        self._started += [stop_oracle_service, fleet.shutdown, selection.shutdown, trainer.shutdown]
        url = start_oracle_service(config)
        with ThreadPoolExecutor(max_workers=3) as pool:  # actor start-ups overlap; each blocks until ready
            for future in [pool.submit(fleet.setup), pool.submit(selection.setup), pool.submit(trainer.start)]:
                future.result()
        oracle = OracleClient.from_config(config.oracle, base_url=url, on_progress=self.on_label_progress)
        self._started.append(oracle.close)

        def sync(adapter_dir: Path, version: int) -> None:
            broadcast_adapter(adapter_dir, version, [fleet, selection])

        return LoopParts(fleet=fleet, selector=selection, oracle=oracle, trainer=trainer, sync=sync)

    def shutdown(self) -> None:
        for stop in reversed(self._started):
            try:
                stop()
            except Exception:  # noqa: BLE001 - best effort while tearing down; the loop's own error wins
                logger.warning("shutting down %s failed", stop, exc_info=True)
