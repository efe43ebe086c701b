"""Programmatic oracle: rewards from a user function, errors naming the callable."""

from __future__ import annotations

import math

import pytest

from system.config import OracleConfig
from system.errors import OracleError
from system.oracles import build_oracle
from system.types import CandidatePair

SPEC = "tests.system.oracles.rewards_for_tests"


def test_labels_follow_the_function() -> None:
    oracle = build_oracle(OracleConfig(kind="programmatic", callable=f"{SPEC}:politeness", temperature=2.0))
    pair = CandidatePair(pair_id="p", prompt_id="x", prompt="hi", response_1="no", response_2="please, thank you")
    (label,) = oracle.label([pair])
    assert label.preferred == 2
    assert label.prob_1 == pytest.approx(1 / (1 + math.exp(-(0 - 2) / 2.0)))
    assert label.oracle == "programmatic" and label.model_version == f"{SPEC}:politeness"


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("no_colon", "expected 'module:function'"),
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{SPEC}:missing", "has no attribute 'missing'"),
        (f"{SPEC}:NOT_CALLABLE", "'NOT_CALLABLE' is not callable"),
    ],
)
def test_bad_callable_is_named(spec: str, match: str) -> None:
    with pytest.raises(OracleError, match=match) as raised:
        build_oracle(OracleConfig(kind="programmatic", callable=spec))
    assert spec in str(raised.value)


def test_function_returning_garbage_is_named() -> None:
    oracle = build_oracle(OracleConfig(kind="programmatic", callable=f"{SPEC}:not_a_number"))
    pair = CandidatePair(pair_id="p", prompt_id="x", prompt="hi", response_1="a", response_2="b")
    with pytest.raises(OracleError, match="not_a_number.*ValueError"):
        oracle.label([pair])
