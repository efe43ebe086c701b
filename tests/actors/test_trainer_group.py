"""The loop's trainer group: its workers stay up across rounds (same actors, same processes, the policy loaded
once), and a later round trains exactly what a freshly started group trains on the same inputs, for both
``train.round_start`` policies. (Killed workers: tests/actors/test_kill_drills.py.)"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from actors.trainer_group import TrainerGroup
from system.config import load_config
from system.types import PreferencePair
from tests.system.training.conftest import assert_identical

TIMING = {"step_time_s", "peak_rss_gb"}


def _pairs(count: int) -> list[PreferencePair]:
    return [PreferencePair(f"Tell me about cat {i}.", f"Please give cat {i} a soft blanket, thank you.",
                           f"No. Cat {i} is loud.") for i in range(count)]


def _adapter(adapter_dir: Path) -> dict:
    return load_file(adapter_dir / "adapter_model.safetensors")


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in metrics.items() if k not in TIMING} for metrics in history]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pids: list[int], within_s: float) -> bool:
    """Whether every process in ``pids`` has exited within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while any(_alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _fresh_fit(config, pairs, out_dir: Path, initial_adapter: Path | None = None) -> tuple[Path, list[dict]]:
    group = TrainerGroup(config)
    try:
        return group.fit(pairs, out_dir, initial_adapter=initial_adapter)
    finally:
        group.shutdown()


@pytest.mark.slow  # three groups of 2 DeepSpeed workers start, four rounds train: ~2-3 min on a 2-core box
def test_group_stays_up_and_later_rounds_equal_a_fresh_trainer(ray_cluster, tiny_model_dir, tmp_path):
    """Round 2 (12 labels) after round 1 (6 labels) on one group, once from the seeded initialisation ('reset') and
    once from round 1's adapter ('warm_start'), against a fresh group given the same inputs. ZeRO-2 over gloo with
    2 ranks and LoRA dropout: the engine, its gradient hooks, the RNG and the data order all start over each round.
    Tolerance: none — the same operations run in the same order, so the adapters are equal bit for bit."""
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=2", "train.epochs=2", "train.batch_size=4",
        "train.deepspeed.stage=2", "lora.dropout=0.1", "cluster.trainer.num_cpus=1"])
    pairs = _pairs(12)
    group = TrainerGroup(config)
    try:
        round_1, _ = group.fit(pairs[:6], tmp_path / "round_1")
        actors, workers = [actor._actor_id.hex() for actor in group.group.actors], group.identities()
        reset, reset_history = group.fit(pairs, tmp_path / "round_2_reset")
        warm, warm_history = group.fit(pairs, tmp_path / "round_2_warm", initial_adapter=round_1)
        assert [actor._actor_id.hex() for actor in group.group.actors] == actors
        assert group.identities() == workers and [w.policy_loads for w in workers] == [1, 1]
        assert len({w.pid for w in workers}) == 2
    finally:
        group.shutdown()
    assert _gone([w.pid for w in workers], within_s=30)

    fresh_reset, fresh_reset_history = _fresh_fit(config, pairs, tmp_path / "fresh_reset")
    assert_identical(_adapter(reset), _adapter(fresh_reset))
    assert _without_timing(reset_history) == _without_timing(fresh_reset_history)
    fresh_warm, fresh_warm_history = _fresh_fit(config, pairs, tmp_path / "fresh_warm", initial_adapter=round_1)
    assert_identical(_adapter(warm), _adapter(fresh_warm))
    assert _without_timing(warm_history) == _without_timing(fresh_warm_history)
    # the two policies really differ: warm start continues from round 1's weights (the loss starts lower)
    assert warm_history[0]["loss"] < reset_history[0]["loss"]


@pytest.mark.slow  # two groups of 2 DeepSpeed workers, three rounds: ~1-2 min on a 2-core box
def test_zero3_rounds_load_the_policy_again_and_equal_a_fresh_trainer(ray_cluster, tiny_model_dir, tmp_path):
    """ZeRO-3 partitions the module's own parameters, so its workers load the policy again after each round (the
    processes and the process group stay); round 2 still equals a fresh group's run bit for bit."""
    config = load_config("configs/tiny.yaml", [
        f"model.path={tiny_model_dir}", "train.num_workers=2", "train.epochs=1", "train.batch_size=4",
        "train.deepspeed.stage=3", "cluster.trainer.num_cpus=1"])
    pairs = _pairs(8)
    group = TrainerGroup(config)
    try:
        group.fit(pairs[:4], tmp_path / "round_1")
        pids = [w.pid for w in group.identities()]
        round_2, _ = group.fit(pairs, tmp_path / "round_2")
        assert [(w.pid, w.policy_loads) for w in group.identities()] == [(pid, 3) for pid in pids]
    finally:
        group.shutdown()
    fresh, _ = _fresh_fit(config, pairs, tmp_path / "fresh")
    assert_identical(_adapter(round_2), _adapter(fresh))
