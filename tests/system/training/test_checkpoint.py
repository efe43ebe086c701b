"""Checkpoint files are read with torch.load(weights_only=True): MPO's reference data round-trips as plain
lists, and a rank or reference file holding a pickled object is refused before anything in it runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from system.errors import DataError
from system.training.checkpoint import (
    PROGRESS_FILE,
    REFERENCE_FILE,
    _rank_file,
    latest_checkpoint,
    read_checkpoint,
    write_checkpoint,
)
from system.training.reference import MpoReference
from system.training.runner import MetricTally, TrainProgress
from tests.hostile import HostilePickle


class _NoEngine:
    """Stands for the engine: these tests are about the shared files, not the weights."""

    def save(self, directory: Path) -> None:
        pass

    def load(self, directory: Path) -> None:
        pass


@pytest.mark.parametrize("reference", [MpoReference((0.25, 0.5), (("a", "b"), ("c",))),
                                       torch.tensor([[-1.5, -2.0], [-0.5, -3.0]]), None],
                         ids=["mpo", "logps", "none"])
def test_reference_data_round_trips_through_weights_only_files(tmp_path: Path, reference: object) -> None:
    progress, tally = TrainProgress(), MetricTally()
    write_checkpoint(tmp_path, _NoEngine(), progress, tally, reference, rank=0)  # type: ignore[arg-type]
    got_progress, got_tally, got_reference = read_checkpoint(tmp_path, _NoEngine(), rank=0)  # type: ignore[arg-type]
    assert (got_progress, got_tally) == (progress, tally)
    if isinstance(reference, torch.Tensor):
        assert torch.equal(got_reference, reference)
    else:
        assert got_reference == reference


@pytest.mark.parametrize("hostile_file", ["rank", "reference"])
def test_a_pickled_object_in_a_checkpoint_is_refused(tmp_path: Path, hostile_file: str) -> None:
    write_checkpoint(tmp_path, _NoEngine(), TrainProgress(), MetricTally(), None, rank=0)  # type: ignore[arg-type]
    marker = tmp_path / "marker"
    name = _rank_file(0) if hostile_file == "rank" else REFERENCE_FILE
    torch.save({"rng": HostilePickle(marker)}, tmp_path / name)
    with pytest.raises(DataError, match=rf"{name}: not a tensor state file \(refused to load"):
        read_checkpoint(tmp_path, _NoEngine(), rank=0)  # type: ignore[arg-type]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not a checkpoint's progress (JSONDecodeError)"),
        ('{"epoch": 1, "surprise": 2}', "not a checkpoint's progress (TypeError)"),
        ('{"optimizer_steps": "9; rm -rf /"}', "field 'optimizer_steps': expected a non-negative integer"),
        ('{"epoch_metrics": [1]}', "field 'epoch_metrics': expected a list of objects"),
    ],
)
def test_a_broken_progress_file_is_one_data_error(tmp_path: Path, content: str, problem: str) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / PROGRESS_FILE).write_text(content)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'ckpt' / PROGRESS_FILE}: {problem}")):
        latest_checkpoint(tmp_path)


def test_a_half_written_checkpoint_is_skipped_for_the_newest_complete_one(tmp_path: Path) -> None:
    """A worker killed while its checkpoint was copied into place leaves an empty progress file beside complete
    ones; resuming takes the newest complete checkpoint."""
    for name, content in (("checkpoint_4", '{"epoch": 0, "batch": 4, "optimizer_steps": 4}'),
                          ("checkpoint_8", "")):
        (tmp_path / name).mkdir()
        (tmp_path / name / PROGRESS_FILE).write_text(content)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint_4"
