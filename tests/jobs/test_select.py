"""``activealign select``: offline selection with a replay oracle revealed batch by batch."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from jobs.select import main
from system.config import load_config
from system.data import read_rows, write_rows
from system.errors import DataError, SelectionError
from system.selection import rank_rows
from system.selection.ensemble import EnsembleHeads, draw_anchors
from tests.conftest import REPO_ROOT
from tests.system.selection.picks import local_picks

CONFIG = REPO_ROOT / "configs/tiny.yaml"


def _pool_rows(rows: int = 40, dim: int = 6, seed: int = 0) -> list[dict]:
    generator = torch.Generator().manual_seed(seed)
    phi = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
    truth = torch.randn(dim, generator=generator, dtype=torch.float64) * 2
    first = torch.sigmoid(phi @ truth) > torch.rand(rows, generator=generator, dtype=torch.float64)
    return [
        {"pair_id": f"pair-{i}", "phi": phi[i].tolist(), "label": 1 if bool(first[i]) else 2} for i in range(rows)
    ]


def _run(tmp_path: Path, rows: list[dict], strategy: str, budget: int, batch_size: int, name: str = "pool") -> list:
    pool = tmp_path / f"{name}.jsonl"
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / f"{name}-selected.jsonl"
    assert main(load_config(CONFIG), pool, out, strategy, budget, batch_size) == 0
    return list(read_rows(out))


@pytest.mark.parametrize("strategy", ["adpo_plus", "ensemble"])
def test_unselected_labels_are_never_read(tmp_path: Path, strategy: str) -> None:
    rows = _pool_rows()
    selected = _run(tmp_path, rows, strategy, 12, 4, "clean")
    chosen = {row["pair_id"] for row in selected}
    poisoned = [row if row["pair_id"] in chosen else {**row, "label": "POISON"} for row in rows]
    again = _run(tmp_path, poisoned, strategy, 12, 4, "poisoned")
    assert [row["pair_id"] for row in again] == [row["pair_id"] for row in selected]
    assert [row["rank"] for row in again] == list(range(12))
    assert [row["reveal_batch"] for row in again] == [0] * 4 + [1] * 4 + [2] * 4
    by_id = {row["pair_id"]: row["label"] for row in rows}
    assert all(row["label"] == by_id[row["pair_id"]] for row in again)


def test_adpo_plus_refits_between_batches_on_revealed_labels(tmp_path: Path) -> None:
    rows = _pool_rows()
    flipped = [{**row, "label": 3 - row["label"]} for row in rows]
    original = [row["pair_id"] for row in _run(tmp_path, rows, "adpo_plus", 12, 4, "a")]
    other = [row["pair_id"] for row in _run(tmp_path, flipped, "adpo_plus", 12, 4, "b")]
    assert original[:4] == other[:4]  # first batch: no label known, w = 1/4 everywhere
    phi = torch.tensor([row["phi"] for row in rows], dtype=torch.float64)
    # w = 1/4 everywhere: V = I + Σ φφᵀ/4 = (4I + Σ φφᵀ)/4, the unweighted design with λ = 4, same argmaxes.
    reference = local_picks(phi, 4, 4.0, "adpo")
    assert original[:4] == [f"pair-{i}" for i in reference]
    one_batch = [row["pair_id"] for row in _run(tmp_path, rows, "adpo_plus", 12, 12, "c")]
    assert one_batch == [f"pair-{i}" for i in local_picks(phi, 12, 4.0, "adpo")]
    assert one_batch != original  # refitting the plug-in estimate changed later picks


def test_ensemble_refits_its_heads_between_batches_on_revealed_labels(tmp_path: Path) -> None:
    """First batch: no label, the heads are their anchors (seeded by selection.seed), so flipping every label
    changes nothing there; afterwards the heads are refit on the revealed labels and the picks move."""
    rows = _pool_rows()
    original = [row["pair_id"] for row in _run(tmp_path, rows, "ensemble", 12, 4, "a")]
    flipped = [row["pair_id"] for row in _run(tmp_path, [{**row, "label": 3 - row["label"]} for row in rows],
                                             "ensemble", 12, 4, "b")]
    phi = torch.tensor([row["phi"] for row in rows], dtype=torch.float64)
    anchors = draw_anchors(8, 6, 1.0, seed=load_config(CONFIG).selection.seed)
    first = rank_rows(EnsembleHeads(anchors).keys(phi), torch.zeros(40, dtype=torch.bool), 4)
    assert original[:4] == flipped[:4] == [f"pair-{i}" for i in first.tolist()]
    assert original[4:] != flipped[4:]


def test_selected_label_that_is_invalid_is_reported_with_its_row(tmp_path: Path) -> None:
    rows = [{**row, "label": 7} for row in _pool_rows(10)]
    with pytest.raises(DataError, match=r"row \d+: field 'label': expected 1 or 2, got 7"):
        _run(tmp_path, rows, "adpo", 2, 2)


@pytest.mark.parametrize(
    ("edit", "budget", "error", "message"),
    [
        (lambda rows: rows[3].update(pair_id="pair-1"), 2, DataError,
         "row 4: field 'pair_id': duplicate 'pair-1' \\(first at row 2\\)"),
        (lambda rows: rows[2]["phi"].__setitem__(0, float("nan")), 2, DataError, "row 3: field 'phi': NaN/inf"),
        (lambda rows: None, 11, SelectionError, "budget 11 exceeds the 10 selectable pairs"),
        (lambda rows: rows[5].update(phi=[1.0]), 2, DataError, "row 6: field 'phi': length 1"),
    ],
)
def test_bad_pools_fail_with_one_line_errors(tmp_path: Path, edit, budget: int, error, message: str) -> None:
    rows = _pool_rows(10)
    edit(rows)
    with pytest.raises(error, match=message):
        _run(tmp_path, rows, "activedpo", budget, 4)


def test_cli_selects_from_a_parquet_pool_and_reports_bad_input(tmp_path: Path) -> None:
    rows = _pool_rows(30)
    rows[4]["phi"] = [0.0] * 6  # zero-norm: never selected
    pool, out = tmp_path / "pool.parquet", tmp_path / "out.parquet"
    write_rows(pool, rows)
    command = [str(REPO_ROOT / ".venv/bin/activealign"), "select", "--config", str(CONFIG), "--pool", str(pool),
               "--out", str(out), "--strategy", "adpo", "--budget", "29", "--selection.reg", "0.5"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    selected = list(read_rows(out))
    phi = torch.tensor([row["phi"] for row in rows], dtype=torch.float64)
    expected = local_picks(phi, 29, 0.5, "adpo")
    assert [row["pair_id"] for row in selected] == [f"pair-{i}" for i in expected]
    assert "pair-4" not in {row["pair_id"] for row in selected}
    too_many = subprocess.run(command[:-4] + ["--budget", "30"], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=300)
    assert too_many.returncode == 2
    assert too_many.stderr.strip().splitlines()[-1].startswith("error: budget 30 exceeds the 29 selectable pairs")


@pytest.mark.slow  # builds the tiny model (~15 s alone, longer on a busy box); features are tested in tests/system
def test_text_pool_is_featurised_with_the_configured_model(tmp_path: Path) -> None:
    prompts = ["Say hello.", "Name a colour.", "Count to three."]
    rows = [
        {"pair_id": f"t{i}", "prompt": prompts[i % 3], "response_1": f"answer {i} please", "response_2": f"no {i}"}
        for i in range(6)
    ]
    pool, out = tmp_path / "text.jsonl", tmp_path / "text-out.jsonl"
    pool.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = load_config(CONFIG, [f"model.path={tmp_path / 'model'}", "features.projection_dim=16"])
    assert main(config, pool, out, "activedpo", 3, None) == 0
    selected = list(read_rows(out))
    assert len(selected) == 3 and len({row["pair_id"] for row in selected}) == 3
    assert all(0 < row["score"] <= 4.0 for row in selected)  # ‖φ‖² ≤ 4 for differences of unit vectors, λ = 1
    assert selected[0]["score"] >= selected[1]["score"] >= selected[2]["score"]


def test_a_pool_named_as_a_dataset_selects_what_the_same_file_selects(tmp_path: Path) -> None:
    """``--pool hf:DIR?split=train`` (a dataset repository on disk, read by datasets.load_dataset) as typer hands it
    over, a Path, picks exactly the pairs the same rows picked from a JSONL file."""
    rows = _pool_rows(40)
    repo = tmp_path / "pool-repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (repo / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                    "    path: data/train.jsonl\n---\n")
    out = tmp_path / "from-dataset.jsonl"
    assert main(load_config(CONFIG), Path(f"hf:{repo}?split=train"), out, "adpo_plus", 12, 4) == 0
    assert list(read_rows(out)) == _run(tmp_path, rows, "adpo_plus", 12, 4)
