"""The annotator load benchmark, small: 10 people with their own tokens fetch and answer concurrently against
`activealign serve` (human oracle, k = 3) until 150 answers are in; none is lost or stored twice, nobody is handed
a pair twice, no answer is refused because the pair filled up meanwhile, every pair has exactly k answers and one
majority label, and the port is free afterwards."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.slow
def test_concurrent_annotators_store_each_answer_once_and_k_per_pair(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    load_annotators = importlib.import_module("load_annotators")
    report = load_annotators.main(["--annotators", "10", "--answers", "150", "--k", "3",
                                   "--out", str(tmp_path / "load.json")])
    assert report["pairs"] == 50
    assert report["acknowledged"] == 150
    assert report["lost"] == report["duplicated"] == report["stored_not_acknowledged"] == 0
    assert report["pairs_given_twice_to_one_person"] == 0
    assert report["pairs_with_k_answers"] == 50 and report["pairs_with_other_counts"] == 0
    assert report["majority_labels"] == 50 and report["tasks"] == {"done": 50}
    # no 409: a handed-out pair holds its person's place, so nobody answers a pair that others closed meanwhile
    assert set(report["statuses"]) <= {"GET 200", "GET 503", "POST 200", "POST 503"}
    assert report["port_freed_after_stop"]
