"""Every registered strategy against an independent computation, plus bad-input handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from system.errors import ConfigError, SelectionError
from system.losses import logistic_curvature
from system.selection import (
    DesignState,
    LocalPool,
    PoolInputs,
    fit_linear_dpo,
    get_strategy,
    pick_validated,
    select_round,
    strategy_names,
    validate_pool,
)
from system.selection.shards import blocked_rows
from tests.system.selection.picks import local_picks


def _pool(rows: int = 60, dim: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_builtin_strategies_are_registered_with_their_feature_kinds() -> None:
    assert set(strategy_names()) >= {"random", "activedpo", "adpo", "adpo_plus", "apo", "ensemble"}
    assert get_strategy("ensemble").feature_kind == "embedding" and get_strategy("ensemble").learns_from_labels
    assert get_strategy("activedpo").feature_kind == "gradient"
    assert get_strategy("adpo").feature_kind == "embedding"
    assert get_strategy("adpo_plus").needs_weights
    assert not get_strategy("apo").regenerates
    with pytest.raises(ConfigError, match="unknown strategy 'nope'.*activedpo"):
        get_strategy("nope")


def test_random_is_seeded_distinct_and_uniform_over_selectable_rows() -> None:
    phi = _pool()
    phi[7] = 0.0
    first = local_picks(phi, 20, 1.0, "random", seed=3)
    assert first == local_picks(phi, 20, 1.0, "random", seed=3)
    assert first != local_picks(phi, 20, 1.0, "random", seed=4)
    assert len(set(first)) == 20 and 7 not in first
    counts = torch.zeros(60)
    for seed in range(300):
        counts[local_picks(phi, 10, 1.0, "random", seed=seed)] += 1
    assert counts[7] == 0
    expected = 300 * 10 / 59
    assert float(counts.max()) < expected * 1.6 and float(counts[counts > 0].min()) > expected * 0.4


def test_adpo_plus_maximises_weighted_score_with_sqrt_weight_updates() -> None:
    phi = _pool(80, 6, seed=1)
    weights = logistic_curvature(torch.randn(80, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3)
    picks = local_picks(phi, 12, 0.3, "adpo_plus", weights=weights)
    v = 0.3 * torch.eye(6, dtype=torch.float64)
    expected: list[int] = []
    for _ in range(12):
        scores = weights * ((phi @ torch.linalg.inv(v)) * phi).sum(-1)
        scores[expected] = -1.0
        best = int(torch.argmax(scores))
        expected.append(best)
        v = v + weights[best] * torch.outer(phi[best], phi[best])
    assert picks == expected
    with pytest.raises(SelectionError, match="plug-in weights"):
        local_picks(phi, 3, 1.0, "adpo_plus")


def test_select_round_reports_ids_scores_and_skipped_zero_norm() -> None:
    phi = _pool(10, 3)
    phi[[2, 5]] = 0.0
    ids = [f"p{i}" for i in range(10)]
    initial_scores = (phi * phi).sum(-1)  # φᵀV⁻¹φ with V = I
    result, state = select_round(LocalPool(phi, blocked_rows(phi)), ids, torch.zeros(0, 3, dtype=torch.float64), 8,
                                 "adpo", round_index=0, reg=1.0, refactor_every=64, seed=0)
    assert result.skipped_zero_norm == 2
    assert set(result.pair_ids) == set(ids) - {"p2", "p5"}
    first = ids.index(result.pair_ids[0])
    assert result.scores[0] == pytest.approx(float(initial_scores.max())) and first == int(initial_scores.argmax())
    assert result.strategy == "adpo" and result.extra["logdet"] == pytest.approx(state.logdet())


@pytest.mark.parametrize(
    ("phi_edit", "budget", "message"),
    [
        (lambda phi: phi.__setitem__((3, 1), float("nan")), 2, "NaN/inf in row 3"),
        (lambda phi: phi.__setitem__((4, 0), float("inf")), 2, "NaN/inf in row 4"),
        (lambda phi: None, 11, "budget 11 exceeds the 10 selectable pairs"),
        (lambda phi: phi.__setitem__(slice(0, 2), 0.0), 9, r"budget 9 exceeds the 8 selectable pairs.*2 zero-norm"),
    ],
)
def test_bad_pools_raise_one_line_selection_errors(phi_edit, budget: int, message: str) -> None:
    phi = _pool(10, 3)
    phi_edit(phi)
    with pytest.raises(SelectionError, match=message):
        local_picks(phi, budget, 1.0, "activedpo")


def test_dimension_mismatch_and_negative_weights_are_rejected() -> None:
    phi = _pool(3, 3)
    with pytest.raises(SelectionError, match="dimension 3 does not match the design state's 5"):
        validate_pool(PoolInputs(phi), DesignState(5))
    with pytest.raises(SelectionError, match="negative plug-in weight at row 1"):
        validate_pool(PoolInputs(phi, torch.tensor([0.1, -0.1, 0.2], dtype=torch.float64)), DesignState(3))


def test_user_strategy_in_one_file_is_found_by_dotted_path(tmp_path, monkeypatch) -> None:
    (tmp_path / "my_rule.py").write_text(
        "from system.selection import Picks, Strategy, register_strategy\n"
        "@register_strategy('first_rows')\n"
        "class FirstRows(Strategy):\n"
        "    def pick(self, pool, budget, state, seed):\n"
        "        blocked = pool.blocked()\n"
        "        rows = [i for i in range(len(blocked)) if not blocked[i]][:budget]\n"
        "        return Picks(rows, [0.0] * len(rows))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    phi = _pool(5, 2)
    phi[1] = 0.0
    assert local_picks(phi, 3, 1.0, "my_rule:first_rows") == [0, 2, 3]


@pytest.mark.parametrize("rows", [40, 5])  # k ≤ n (Newton in k) and k > n (Woodbury in n)
def test_linear_dpo_fit_matches_sklearn_logistic_regression(rows: int) -> None:
    phi = _pool(rows, 12, seed=rows)
    truth = torch.randn(12, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    prefer_first = torch.sigmoid(phi @ truth) > torch.rand(rows, generator=torch.Generator().manual_seed(1))
    theta = fit_linear_dpo(phi, prefer_first, l2=0.7)
    # sklearn's labels y ∈ {0,1} with features φ equal s = 2y−1 with margin θᵀφ; C = 1/l2.
    reference = LogisticRegression(C=1 / 0.7, fit_intercept=False, tol=1e-12, max_iter=10_000)
    reference.fit(phi.numpy(), prefer_first.numpy().astype(int))
    np.testing.assert_allclose(theta.numpy(), reference.coef_[0], rtol=1e-5, atol=1e-6)


def test_offline_adpo_plus_reweights_every_term_of_v_at_the_last_refit(tmp_path) -> None:
    """V after the run = λI + Σ over all picks of w φφᵀ with w = μ(1−μ) at the estimate refit before the last
    batch (sklearn's logistic fit on the labels revealed by then), not the weights each pick had when picked."""
    from system.selection.offline import load_pool, select_offline

    phi = _pool(40, 3, seed=5)
    truth = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)
    labels = [1 if float(row @ truth) > 0 else 2 for row in phi]
    pool_path = tmp_path / "pool.jsonl"
    pool_path.write_text("".join(f'{{"pair_id": "p{i}", "phi": {row.tolist()}, "label": {label}}}\n'
                                 for i, (row, label) in enumerate(zip(phi, labels, strict=True))))
    state = DesignState(3, 0.5)
    rows = select_offline(load_pool(pool_path), phi, get_strategy("adpo_plus"), 12, 4, state, plugin_l2=0.7)
    picked = [int(row["pair_id"][1:]) for row in rows]
    earlier = picked[:8]  # revealed before the last batch of 4
    reference = LogisticRegression(C=1 / 0.7, fit_intercept=False, tol=1e-12, max_iter=10_000)
    reference.fit(phi[earlier].numpy(), [int(labels[i] == 1) for i in earlier])
    mu = torch.sigmoid(phi[picked] @ torch.tensor(reference.coef_[0]))
    weights = mu * (1 - mu)
    expected = 0.5 * torch.eye(3, dtype=torch.float64) + (phi[picked].T * weights) @ phi[picked]
    torch.testing.assert_close(state.v, expected, rtol=1e-5, atol=1e-7)


def test_pick_validated_never_picks_excluded_rows_and_counts_them_out_of_the_budget() -> None:
    phi = _pool(10, 3)
    exclude = torch.zeros(10, dtype=torch.bool)
    exclude[[0, 4, 9]] = True
    greedy, _ = pick_validated(PoolInputs(phi), 7, DesignState(3), get_strategy("adpo"), exclude=exclude)
    assert sorted(greedy.indices) == [1, 2, 3, 5, 6, 7, 8]
    with pytest.raises(SelectionError, match="budget 8 exceeds the 7 selectable"):
        pick_validated(PoolInputs(phi), 8, DesignState(3), get_strategy("random"), exclude=exclude)


def test_offline_warm_start_picks_uniformly_then_hands_over_to_the_strategy(tmp_path) -> None:
    """The first ``warm_start`` picks are the random strategy's, batch by batch (seed + batch) over the rows not
    yet taken; the rest are ADPO+'s."""
    from system.selection.offline import load_pool, select_offline

    phi = _pool(30, 3, seed=2)
    pool_path = tmp_path / "pool.jsonl"
    pool_path.write_text("".join(f'{{"pair_id": "p{i}", "phi": {row.tolist()}, "label": {1 + i % 2}}}\n'
                                 for i, row in enumerate(phi)))
    rows = select_offline(load_pool(pool_path), phi, get_strategy("adpo_plus"), 10, 3, DesignState(3),
                          seed=5, warm_start=5)
    picked = [int(row["pair_id"][1:]) for row in rows]
    remaining = list(range(30))
    expected = []
    for batch, take in enumerate([3, 2]):  # the warm start ends mid-batch: 3 + 2 uniform picks
        order = torch.randperm(len(remaining), generator=torch.Generator().manual_seed(5 + batch))[:take]
        expected += [remaining[j] for j in order.tolist()]
        remaining = [i for i in remaining if i not in expected]
    assert picked[:5] == expected
    assert [row["reveal_batch"] for row in rows] == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert len(set(picked)) == 10
