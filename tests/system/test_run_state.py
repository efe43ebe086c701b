"""Round state round-trips through state.json and restores the RNG streams exactly."""

from __future__ import annotations

import base64
import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from system.config import config_from_dict
from system.errors import ConfigError, DataError
from system.run_state import (
    RoundState,
    check_resume_config,
    load_round_state,
    load_state_file,
    restore_rng,
    round_dir,
    save_round_state,
)
from tests.hostile import HostilePickle


def test_save_load_round_trip_and_rng_replay(tmp_path: Path) -> None:
    assert load_round_state(tmp_path) is None
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = RoundState(round=2, phase="selected", policy_version=1, adapter_path=str(tmp_path / "a"), mlflow_run_id="r",
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


def test_rng_state_is_plain_json_and_a_pickled_blob_is_refused(tmp_path: Path) -> None:
    save_round_state(tmp_path, RoundState(round=1))
    saved = json.loads((tmp_path / "state.json").read_text())
    assert set(saved["rng"]) == {"python", "numpy", "torch"}
    assert len(saved["rng"]["python"][1]) == 625 and len(saved["rng"]["numpy"][1]) == 624
    marker = tmp_path / "marker"
    saved["rng"] = base64.b64encode(pickle.dumps({"x": HostilePickle(marker)})).decode("ascii")
    (tmp_path / "state.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match=r"state.json: field 'rng': .*pickled state .* not loaded"):
        load_round_state(tmp_path)
    with pytest.raises(DataError, match="field 'rng'"):
        restore_rng({"python": [3, [1, 2], None], "numpy": [], "torch": "!!"})
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["pickle", "garbage", "empty"])
def test_state_files_never_unpickle_code(tmp_path: Path, payload: str) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "selector_state.pt"
    if payload == "pickle":
        torch.save({"design": HostilePickle(marker), "round": 1}, path)
    else:
        path.write_bytes(b"\x80\x04not a pickle at all" if payload == "garbage" else b"")
    with pytest.raises(DataError, match=r"selector_state.pt: not a tensor state file \(refused to load") as info:
        load_state_file(path)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_state_file_round_trip_keeps_tensors_and_primitives(tmp_path: Path) -> None:
    state = {"pair_ids": ["a", "b"], "rows": torch.arange(6.0).reshape(2, 3), "version": 2, "adapter_dir": None,
             "rng": (3, tuple(range(5)), None)}
    torch.save(state, tmp_path / "features-0.pt")
    loaded = load_state_file(tmp_path / "features-0.pt")
    assert loaded["pair_ids"] == ["a", "b"] and loaded["version"] == 2 and loaded["adapter_dir"] is None
    assert torch.equal(loaded["rows"], state["rows"]) and loaded["rng"] == state["rng"]


def test_resume_config_rule_names_every_result_changing_key() -> None:
    saved = config_from_dict({})
    # a resume reads the saved config.yaml, where the run's own label store is written out: moving the run
    # directory does not move the store
    harmless = config_from_dict({"tracking": {"enabled": False}, "cluster": {"num_cpus": 3, "placement": "colocate"},
                                 "loop": {"rounds": 7, "run_dir": "elsewhere"},
                                 "oracle": {"port": 9001, "label_store_url": saved.oracle.label_store_url}})
    check_resume_config(saved, harmless, "runs/x")
    changed = config_from_dict({"selection": {"strategy": "random", "budget": 3}, "train": {"loss": "ipo"},
                                "loop": {"seed": 5, "rounds": 9}, "lora": {"r": 4}, "features": {"seed": 1},
                                "model": {"path": "other"}})
    with pytest.raises(ConfigError) as refused:
        check_resume_config(saved, changed, "runs/x")
    message = str(refused.value)
    named = re.findall(r"(\w+\.[\w.]+) \(", message)
    assert named == ["features.seed", "loop.seed", "lora.r", "model.path", "selection.budget", "selection.strategy",
                     "train.loss"]
    assert message.startswith("--resume runs/x: ") and "\n" not in message
    assert "selection.strategy ('activedpo' -> 'random')" in message


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("adapter_path", "/etc", "field 'adapter_path': '/etc' is outside the run directory"),
        ("selector_state_path", "../../etc/passwd", "field 'selector_state_path': '../../etc/passwd' is outside"),
        ("adapter_path", "x\x00y", "field 'adapter_path': expected a string"),
        ("round", "1; DROP TABLE labels", "field 'round': expected a non-negative integer"),
        ("phase", "../../x", "field 'phase': '../../x' is not one of start"),
        ("labelled_pair_ids", [1, 2], "field 'labelled_pair_ids': expected a list of strings"),
    ],
)
def test_a_tampered_state_file_cannot_point_outside_its_run(tmp_path: Path, field: str, value: object,
                                                            problem: str) -> None:
    save_round_state(tmp_path, RoundState(round=1, adapter_path=str(tmp_path / "round_001" / "adapter")))
    saved = json.loads((tmp_path / "state.json").read_text())
    (tmp_path / "state.json").write_text(json.dumps({**saved, field: value}))
    with pytest.raises(DataError, match=re.escape(problem)) as refused:
        load_round_state(tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / 'state.json'}: ") and "\n" not in str(refused.value)
