"""Replay oracle: verdicts looked up by pair_id or by text, unknown pairs named."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from system.config import OracleConfig
from system.data import write_preferences
from system.oracles import UnknownPairError, build_oracle
from system.types import CandidatePair, PreferencePair


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "prefs.jsonl"
    write_preferences(path, [
        PreferencePair(prompt="q1", chosen="good", rejected="bad", pair_id="id-1"),
        PreferencePair(prompt="q2", chosen="fine", rejected="worse", score_chosen=2.0, score_rejected=1.0),
    ])
    return path


def test_lookup_by_id_and_by_text_in_either_order(dataset: Path) -> None:
    oracle = build_oracle(OracleConfig(kind="replay", dataset=str(dataset), temperature=0.5))
    by_id, by_text = oracle.label([
        CandidatePair(pair_id="id-1", prompt_id="a", prompt="q1", response_1="bad", response_2="good"),
        CandidatePair(pair_id="new", prompt_id="b", prompt="q2", response_1="fine", response_2="worse"),
    ])
    assert (by_id.preferred, by_id.prob_1, by_id.oracle) == (2, 0.0, "replay")
    assert by_text.preferred == 1
    assert by_text.prob_1 == pytest.approx(1 / (1 + math.exp(-(2.0 - 1.0) / 0.5)))


def test_unknown_pair_is_named(dataset: Path) -> None:
    oracle = build_oracle(OracleConfig(kind="replay", dataset=str(dataset)))
    unknown = CandidatePair(pair_id="ghost", prompt_id="c", prompt="q9", response_1="x", response_2="y")
    assert oracle.missing([unknown]) == ["ghost"]
    with pytest.raises(UnknownPairError, match="'ghost'"):
        oracle.label([unknown])
