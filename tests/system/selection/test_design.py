"""DesignState linear algebra against dense torch.linalg computations, plus hypothesis properties."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from system.errors import SelectionError
from system.selection import DesignState, score_shard


def _features(seed: int, rows: int, dim: int) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000), dim=st.integers(1, 12), picks=st.integers(1, 20), reg=st.floats(0.1, 10.0),
    fold_every=st.sampled_from([1, 3, 32]),
)
def test_sherman_morrison_matches_dense_inverse(seed: int, dim: int, picks: int, reg: float, fold_every: int) -> None:
    phi = _features(seed, picks, dim)
    weights = torch.rand(picks, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    state = DesignState(dim, reg, refactor_every=10_000, fold_every=fold_every)
    for row, weight in zip(phi, weights, strict=True):
        before = state.v_inv.clone() if fold_every == 3 else None  # reading v_inv mid-batch folds early: also exact
        x = row * float(weight) ** 0.5  # a weighted strategy's design row √w φ
        z, c = state.update(x)
        if before is not None:
            torch.testing.assert_close(z, before @ x)
            assert c == pytest.approx(1 + float(x @ before @ x))
    dense_v = reg * torch.eye(dim, dtype=torch.float64) + phi.T @ (phi * weights.unsqueeze(-1))
    torch.testing.assert_close(state.v_inv, torch.linalg.inv(dense_v), rtol=1e-8, atol=1e-10)
    assert state.logdet() == pytest.approx(float(torch.logdet(dense_v)), rel=1e-9, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), dim=st.integers(1, 10), picks=st.integers(1, 15))
def test_scores_nonnegative_monotone_and_logdet_increment(seed: int, dim: int, picks: int) -> None:
    pool = _features(seed, 30, dim) * 3.0
    state = DesignState(dim, reg=0.5)
    previous = score_shard(pool, state.v_inv)
    assert bool((previous >= 0).all())
    for index in range(picks):
        before = state.logdet()
        score = float(score_shard(pool[index : index + 1], state.v_inv)[0])
        _, c = state.update(pool[index])
        assert c - 1 == pytest.approx(score, rel=1e-9, abs=1e-12)  # what the random strategy reports as its score
        assert state.logdet() - before == pytest.approx(math.log1p(score), rel=1e-9, abs=1e-12)
        current = score_shard(pool, state.v_inv)
        assert bool((current >= 0).all())
        assert bool((current <= previous * (1 + 1e-12) + 1e-12).all()), "a score grew when V grew"
        previous = current


def test_refactorisation_resets_drift_to_exact_inverse() -> None:
    phi = _features(3, 200, 16) * 10.0
    state = DesignState(16, reg=1e-3, refactor_every=50)
    for row in phi:
        state.update(row)
    dense_v = 1e-3 * torch.eye(16, dtype=torch.float64) + phi.T @ phi
    torch.testing.assert_close(state.v, dense_v)
    torch.testing.assert_close(state.v_inv, torch.cholesky_inverse(torch.linalg.cholesky(dense_v)))
    assert state.logdet() == pytest.approx(float(torch.logdet(dense_v)), rel=1e-12)


def test_state_dict_roundtrip_continues_identically() -> None:
    phi = _features(5, 20, 6)
    original = DesignState(6, reg=2.0)
    for row in phi[:10]:
        original.update(row)
    restored = DesignState(6, reg=2.0)
    restored.load_state_dict(original.state_dict())
    for row in phi[10:]:
        original.update(row)
        restored.update(row)
    torch.testing.assert_close(restored.v_inv, original.v_inv, rtol=0, atol=0)
    assert restored.logdet() == original.logdet()
    assert restored.num_updates == original.num_updates == 20


def test_restored_state_with_other_dimension_is_rejected() -> None:
    saved = DesignState(8).state_dict()
    with pytest.raises(SelectionError, match="dimension 8 but this selector uses 16"):
        DesignState(16).load_state_dict(saved)


def test_bad_construction_and_updates_are_rejected() -> None:
    with pytest.raises(SelectionError, match="reg"):
        DesignState(4, reg=0.0)
    state = DesignState(4)
    with pytest.raises(SelectionError, match="dimension 3"):
        state.update(torch.ones(3))
    with pytest.raises(SelectionError, match="dimension 3"):
        state.rebuild(torch.ones(2, 3))


def test_rebuild_replaces_the_design_by_the_given_rows() -> None:
    rows = _features(4, 7, 5)
    state = DesignState(5, reg=0.3)
    state.update(_features(5, 1, 5)[0])  # discarded by the rebuild
    state.rebuild(rows)
    dense_v = 0.3 * torch.eye(5, dtype=torch.float64) + rows.T @ rows
    torch.testing.assert_close(state.v, dense_v)
    torch.testing.assert_close(state.v_inv, torch.linalg.inv(dense_v), rtol=1e-10, atol=1e-12)
    assert state.logdet() == pytest.approx(float(torch.logdet(dense_v)), rel=1e-12)
    state.rebuild(rows[:0])
    torch.testing.assert_close(state.v_inv, torch.eye(5, dtype=torch.float64) / 0.3)
