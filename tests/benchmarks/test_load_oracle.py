"""The endpoint load benchmark, short: `activealign serve` under 24 concurrent clients with a deliberately small
queue refuses the overflow with 503 + Retry-After, answers nothing else but 200, stores every acknowledged label
exactly once, and frees its port when stopped."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT


def test_saturated_endpoint_refuses_with_503_and_loses_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    load_oracle = importlib.import_module("load_oracle")
    report = load_oracle.main(["--oracle", "programmatic", "--clients", "24", "--requests", "120", "--seconds", "120",
                               "--baseline-requests", "5", "--max-ongoing", "1", "--max-queued", "1",
                               "--out", str(tmp_path / "load.json")])
    concurrent = report["concurrent"]
    assert concurrent["errors"] == 0, concurrent["statuses"]
    assert concurrent["refused_503"] > 0 and concurrent["retry_after"] == ["1"]
    assert concurrent["ok"] + concurrent["refused_503"] == concurrent["requests"] == 120
    assert report["acknowledged"] == report["acknowledged_unique"] == 4 * (concurrent["ok"] + 5)
    assert report["acknowledged_stored_once"] and report["duplicates_in_store"] == 0
    assert report["port_freed_after_stop"]
