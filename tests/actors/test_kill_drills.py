"""SIGKILL drills: an actor's OS process is killed while it works (or between two calls), and the work still
ends as an uninterrupted run's does (generation: same candidates; features: same rows and same picks, also when
the kill lands between an adapter sync and the next featurize; training: same adapter)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import ray
import torch
from safetensors.torch import load_file

from actors.features import FeatureWorkerGroup
from actors.generation import GenerationFleet
from actors.selector import Selector
from actors.trainer import Trainer
from actors.trainer_group import TrainerGroup
from actors.weights import broadcast_adapter
from system.config import Config, load_config
from system.errors import ActorFailureError, DataError
from system.training.checkpoint import PROGRESS_FILE, read_progress
from system.types import CandidatePair, PreferencePair, PromptRecord
from tests.actors.adapters import perturbed_adapter
from tests.system.training.conftest import assert_identical

KILL_FRACTION = 0.3  # of the uninterrupted call's duration: the victim is mid-call then


def _pid(actor: Any) -> int:
    """The OS process id of a live actor (asked inside the actor)."""
    return int(ray.get(actor.__ray_call__.remote(lambda _self: os.getpid())))


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def _killed_during(call: Callable[[], Any], pid: int, delay_s: float) -> tuple[Any, float]:
    """Run ``call`` while a thread SIGKILLs ``pid`` ``delay_s`` after the call started; (result, kill time
    relative to the call's end: negative means the kill landed before the call returned)."""
    killed_at: list[float] = []

    def kill() -> None:
        time.sleep(delay_s)
        os.kill(pid, signal.SIGKILL)
        killed_at.append(time.perf_counter())

    killer = threading.Thread(target=kill)
    killer.start()
    result = call()
    ended = time.perf_counter()
    killer.join()
    return result, killed_at[0] - ended


def _retried(caplog: pytest.LogCaptureFixture, name: str, rank: int, method: str) -> bool:
    """Whether the group logged that actor ``rank`` failed in ``method`` and the call was retried."""
    return any(f"{name}: actor {rank} failed in {method}" in record.getMessage() for record in caplog.records)


@pytest.fixture(scope="module")
def config(tiny_model_dir):
    return load_config(
        "configs/tiny.yaml",
        [f"model.path={tiny_model_dir}", "generation.engine=hf", "generation.num_actors=2",
         "generation.max_new_tokens=24", "generation.batch_size=2", "cluster.generation.num_cpus=0.5",
         "features.num_workers=2", "features.projection_dim=32", "cluster.features.num_cpus=0.5",
         "cluster.selector.num_cpus=0.25"],
    )


@pytest.mark.drill  # ~25 s: two generate calls and one actor restart
def test_generation_worker_sigkilled_mid_generate_gives_the_same_candidates(ray_cluster, config, caplog):
    """Actor 1's shard reruns on actor 0; samples are seeded per call of a shard, so they do not depend on
    which actor ran it."""
    caplog.set_level(logging.WARNING, logger="actors.group")
    fleet = GenerationFleet(config)
    fleet.setup()
    prompts = [PromptRecord(f"Tell me about the cat number {i}.", f"p{i}") for i in range(16)]
    clean, duration = _timed(lambda: fleet.generate(prompts, n=3, policy_version=0))
    victim = _pid(fleet.group.actors[1])
    drilled, kill_offset = _killed_during(lambda: fleet.generate(prompts, n=3, policy_version=0), victim,
                                          KILL_FRACTION * duration)
    assert kill_offset < 0 and _retried(caplog, "generation", 1, "generate")
    assert drilled == clean and len(clean) == 48
    assert _pid(fleet.group.actors[1]) != victim  # Ray restarted it and it serves again
    assert fleet.generate(prompts, n=3, policy_version=0) == clean
    fleet.shutdown()


def _pairs(count: int) -> list[CandidatePair]:
    return [CandidatePair(f"q{i}", f"q-p{i // 3}", f"Tell me about cat {i // 3}, please, in some detail.",
                          f"A cat {i} sleeps on the warm blanket all day.",
                          f"Thank you, cat {i} plays {'a lot ' * (i % 4)}outside.") for i in range(count)]


def _round(workers: FeatureWorkerGroup, pairs: list[CandidatePair], state_path: Any) -> tuple[list[str], torch.Tensor]:
    """Featurize ``pairs`` and select 6 of them: (picked pair ids, every worker's candidate rows stacked)."""
    selector = Selector(workers.config, state_path)
    selector.setup()
    picked = selector.select(workers, budget=6, strategy="activedpo", round_index=0).pair_ids
    selector.shutdown()
    rows = torch.cat(ray.get([w.__ray_call__.remote(lambda self: self.rows) for w in workers.workers]))
    return list(picked), rows


@pytest.mark.drill  # ~40 s: two featurize passes, one worker restart (policy reload)
def test_feature_worker_sigkilled_mid_featurize_selects_the_same_pairs(ray_cluster, config, tmp_path, caplog):
    """The killed worker is restarted, restores its shard file and reruns its featurize call."""
    caplog.set_level(logging.WARNING, logger="actors.group")
    workers = FeatureWorkerGroup(config, tmp_path / "feature-state")
    workers.setup()
    pairs = _pairs(48)
    _, duration = _timed(lambda: workers.featurize(pairs, [], policy_version=0, strategy="activedpo"))
    expected_ids, expected_rows = _round(workers, pairs, tmp_path / "clean.pt")
    victim = _pid(workers.workers[1])
    _, kill_offset = _killed_during(lambda: workers.featurize(pairs, [], policy_version=0, strategy="activedpo"),
                                    victim, KILL_FRACTION * duration)
    assert kill_offset < 0 and _retried(caplog, "features", 1, "featurize")
    picked, rows = _round(workers, pairs, tmp_path / "drilled.pt")
    assert _pid(workers.workers[1]) != victim
    assert rows.shape == (48, 32) and torch.equal(rows, expected_rows)
    assert picked == expected_ids and len(picked) == 6
    workers.shutdown()


def _version_1_round(workers: FeatureWorkerGroup, adapter: Path, pairs: list[CandidatePair],
                     labelled: list[CandidatePair], kill_rank: int | None = None) -> torch.Tensor:
    """Featurize at version 0 (the shard files then hold version 0), sync ``adapter`` as version 1, SIGKILL
    worker ``kill_rank`` (if any) before it featurizes again, then featurize at version 1; returns the version-0
    candidate rows."""
    workers.featurize(pairs, labelled, policy_version=0, strategy="activedpo")
    version_0_rows = torch.cat(ray.get([w.__ray_call__.remote(lambda self: self.rows) for w in workers.workers]))
    broadcast_adapter(adapter, 1, [workers])
    if kill_rank is not None:
        os.kill(_pid(workers.workers[kill_rank]), signal.SIGKILL)
    workers.featurize(pairs, labelled, policy_version=1, strategy="activedpo")
    return version_0_rows


def _labelled_rows(workers: FeatureWorkerGroup) -> torch.Tensor:
    return torch.cat(ray.get([w.labelled_rows.remote() for w in workers.workers]))


@pytest.mark.drill  # ~60 s: two groups of two workers, four featurize passes, one worker restart (policy reload)
def test_feature_worker_sigkilled_after_an_adapter_sync_featurizes_at_the_new_version(
    ray_cluster, config, tmp_path, caplog
):
    """The worker's shard file still names version 0 and its adapter when it dies holding version 1. Restarted, it
    restores that file and is brought to the group's version 1 before it takes work, so the round's rerun
    featurize computes version-1 rows (not version-0 ones, nor a refusal) and picks what an uninterrupted round
    picks."""
    caplog.set_level(logging.WARNING, logger="actors.group")
    adapter = perturbed_adapter(config, tmp_path / "adapter", seed=1)
    pairs, labelled = _pairs(36)[:30], _pairs(36)[30:]
    clean = FeatureWorkerGroup(config, tmp_path / "clean-state")
    clean.setup()
    version_0_rows = _version_1_round(clean, adapter, pairs, labelled)
    expected_ids, expected_rows = _round(clean, pairs, tmp_path / "clean.pt")
    expected_labelled = _labelled_rows(clean)
    clean.shutdown()
    assert not torch.allclose(expected_rows, version_0_rows, atol=1e-3)  # the adapter changes the features

    workers = FeatureWorkerGroup(config, tmp_path / "drilled-state")
    workers.setup()
    victim = _pid(workers.workers[1])
    _version_1_round(workers, adapter, pairs, labelled, kill_rank=1)
    assert _retried(caplog, "features", 1, "featurize")
    assert _pid(workers.workers[1]) != victim
    assert ray.get(workers.workers[1].__ray_call__.remote(lambda self: self.policy_version)) == 1
    picked, rows = _round(workers, pairs, tmp_path / "drilled.pt")
    assert rows.shape == (30, 32) and torch.equal(rows, expected_rows)
    assert torch.equal(_labelled_rows(workers), expected_labelled)
    assert picked == expected_ids and len(picked) == 6
    workers.shutdown()


def _live_worker_pid(actor_class: str) -> int:
    """The OS process of the one live actor of class ``actor_class`` (``RayTrainWorker``, ``TrainWorker``), from
    Ray's actor table (a process's age does not tell: Ray hands actors worker processes it started ahead of time)."""
    alive = ray._private.state.actors(actor_state_name="ALIVE").values()  # the GCS actor table; no public call has pids
    pids = [int(actor["Pid"]) for actor in alive if actor["ActorClassName"] == actor_class]
    assert len(pids) == 1, f"live {actor_class} actors: {pids}"
    return pids[0]


def _checkpointed_steps(root: Path) -> list[int]:
    """Optimizer steps of the checkpoints under ``root`` whose progress file is complete. Ray Train copies a reported
    checkpoint into place file by file, so a progress file can exist before its content does; one that does not read
    yet is not counted (read as plain JSON, it would end the killer thread before it fired)."""
    steps = []
    for path in root.rglob(PROGRESS_FILE):
        with contextlib.suppress(DataError):
            steps.append(read_progress(path).optimizer_steps)
    return sorted(steps)


def _killer(run_dir: Path, actor_class: str, stop: threading.Event) -> tuple[threading.Thread, list[int],
                                                                             list[BaseException]]:
    """A started thread that SIGKILLs the live ``actor_class`` actor once 4 complete step checkpoints exist under
    ``run_dir``; it records the newest checkpointed step at the kill, or its error (also when ``stop`` is set
    first: the run ended before the fourth checkpoint)."""
    killed: list[int] = []
    errors: list[BaseException] = []

    def kill_after_fourth_checkpoint() -> None:
        try:
            while len(_checkpointed_steps(run_dir)) < 4:
                assert not stop.wait(0.05), "the run ended before its fourth checkpoint was complete"
            os.kill(_live_worker_pid(actor_class), signal.SIGKILL)
            killed.append(max(_checkpointed_steps(run_dir)))
        except BaseException as exc:  # reported by the caller's assertions
            errors.append(exc)

    thread = threading.Thread(target=kill_after_fourth_checkpoint, daemon=True)
    thread.start()
    return thread, killed, errors


def _drill_config(tiny_model_dir: Path, max_failures: int = 1) -> Config:
    return load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=1", "train.epochs=2", "train.batch_size=2",
        "train.deepspeed.enabled=false", "lora.dropout=0.1", "cluster.trainer.num_cpus=1",
        "train.checkpoint_every_steps=4", f"cluster.retries.trainer_max_failures={max_failures}"])


DRILL_PAIRS = [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                              f"No. Cat {i} is loud.") for i in range(40)]  # 20 steps per epoch, 40 in all


@pytest.mark.drill  # ~60-180 s each: two runs (one worker, no DeepSpeed), one worker restart
@pytest.mark.parametrize(("trainer_cls", "actor_class"), [(Trainer, "RayTrainWorker"), (TrainerGroup, "TrainWorker")])
def test_trainer_worker_sigkilled_mid_epoch_resumes_and_ends_like_the_straight_run(
    ray_cluster, tiny_model_dir, tmp_path, trainer_cls: type, actor_class: str
):
    """SIGKILL the training worker once its fourth step checkpoint exists; the trainer (Ray Train, or the loop's
    group, which starts all its workers again) resumes from the newest checkpoint it had taken in, and the final
    adapter equals the straight run's bit for bit. (Under Ray Train, reports the controller had not yet polled are
    lost with the worker: the restart redoes those steps and reports again.)"""
    config = _drill_config(tiny_model_dir)
    straight_trainer, trainer = trainer_cls(config), trainer_cls(config)
    fit_returned = threading.Event()
    try:
        straight, straight_history = straight_trainer.fit(DRILL_PAIRS, tmp_path / "straight")
        getattr(straight_trainer, "shutdown", lambda: None)()  # a group stays up: its worker is not the victim
        killer, killed, killer_errors = _killer(tmp_path / "drilled", actor_class, fit_returned)
        adapter, history = trainer.fit(DRILL_PAIRS, tmp_path / "drilled")
    finally:
        fit_returned.set()
        for stoppable in (straight_trainer, trainer):
            getattr(stoppable, "shutdown", lambda: None)()
    killer.join()
    steps = _checkpointed_steps(tmp_path / "drilled")
    assert killed and 16 <= killed[0] < 40 and steps[-1] == 40, (killed, killer_errors, steps)
    assert steps.count(4) == steps.count(8) == 1  # the restart went on from a checkpoint, it did not start over
    assert [m["loss"] for m in history] == [m["loss"] for m in straight_history]
    assert_identical(*(load_file(path / "adapter_model.safetensors") for path in (straight, adapter)))


@pytest.mark.slow  # ~40-60 s: one group start and a kill
def test_trainer_group_out_of_restarts_raises_a_clear_error(ray_cluster, tiny_model_dir, tmp_path):
    """With no restarts left, a killed worker ends the round with an ActorFailureError that says where the
    checkpoints to resume from are, and the group's workers are gone."""
    group = TrainerGroup(_drill_config(tiny_model_dir, max_failures=0))
    fit_returned = threading.Event()
    killer, killed, killer_errors = _killer(tmp_path, "TrainWorker", fit_returned)
    with pytest.raises(ActorFailureError, match=f"failed 1 time .* under {tmp_path}/checkpoints"):
        group.fit(DRILL_PAIRS, tmp_path)
    fit_returned.set()
    killer.join()
    assert killed and not killer_errors and group.group is None
