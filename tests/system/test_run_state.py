"""Round state round-trips through state.json and restores the RNG streams exactly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from system.errors import DataError
from system.run_state import RoundState, load_round_state, restore_rng, round_dir, save_round_state


def test_save_load_round_trip_and_rng_replay(tmp_path: Path) -> None:
    assert load_round_state(tmp_path) is None
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = RoundState(round=2, phase="selected", policy_version=1, adapter_path="a", mlflow_run_id="r",
                       labelled_pair_ids=["p1", "p2"])
    save_round_state(tmp_path, state)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    loaded = load_round_state(tmp_path)
    assert loaded == state
    restore_rng(loaded.rng)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert not list(tmp_path.glob("*.tmp*"))


def test_done_orders_rounds_then_phases() -> None:
    state = RoundState(round=2, phase="labelled")
    assert state.done(1, "evaluated")
    assert state.done(2, "selected") and state.done(2, "labelled")
    assert not state.done(2, "trained")
    assert not state.done(3, "start")
    assert round_dir("runs/x", 2) == Path("runs/x/round_002")


def test_unknown_phase_and_corrupt_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown phase"):
        save_round_state(tmp_path, RoundState(phase="dreaming"))
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(DataError, match="state.json: corrupt round state"):
        load_round_state(tmp_path)
