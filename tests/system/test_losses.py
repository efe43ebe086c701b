"""Preference losses: hand-computed values, finite differences, TRL's own loss code, extreme margins."""

from __future__ import annotations

import collections
import math
import types
from dataclasses import astuple

import pytest
import torch
from trl import DPOTrainer

from system.config import TrainConfig
from system.errors import ConfigError
from system.losses import (
    LOSSES,
    PairLogps,
    dpo_loss,
    get_loss,
    implicit_rewards,
    ipo_loss,
    logistic_curvature,
    mpo_loss,
    pair_preference_prob,
)


def _t(*values: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


# ---------------------------------------------------------------- closed forms (worked by hand)
# policy (chosen, rejected) = (-1, -3), reference (-2, -2): log-ratio margin Δ = 1 - (-1) = 2.


def test_dpo_closed_form() -> None:
    loss = dpo_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), beta=0.5)
    # h = βΔ = 1 → −log σ(1) = log(1 + e⁻¹)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-12)
    assert dpo_loss(_t(-2.0), _t(-2.0), _t(-2.0), _t(-2.0), beta=0.5).item() == pytest.approx(math.log(2.0))


def test_dpo_label_smoothing_closed_form() -> None:
    loss = dpo_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), beta=0.5, label_smoothing=0.1)
    # −0.9·log σ(1) − 0.1·log σ(−1) = 0.9·log(1+e⁻¹) + 0.1·log(1+e)
    expected = 0.9 * math.log1p(math.exp(-1.0)) + 0.1 * math.log1p(math.e)
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_ipo_closed_form() -> None:
    # (Δ − 1/(2β))²: β = 0.5 → (2 − 1)² = 1; β = 0.25 → (2 − 2)² = 0; β = 1 → 1.5² = 2.25
    for beta, expected in ((0.5, 1.0), (0.25, 0.0), (1.0, 2.25)):
        assert ipo_loss(_t(-1.0), _t(-3.0), _t(-2.0), _t(-2.0), beta=beta).item() == pytest.approx(expected)


def test_implicit_rewards() -> None:
    rewards = implicit_rewards(_t(-1.0, -3.0), _t(-2.0, -2.0), beta=0.5)
    assert rewards.tolist() == [0.5, -0.5]


def test_mpo_closed_form() -> None:
    # d = −1 − (−2) = 1, p = σ(1); p_ref = 0.3; samples mean (−1 − 3)/2 = −2
    beta, tau, p_ref = 0.7, 0.1, 0.3
    p = 1.0 / (1.0 + math.exp(-1.0))
    pair_kl = p * math.log(p / p_ref) + (1 - p) * math.log((1 - p) / (1 - p_ref))
    expected = -p + beta * pair_kl - tau * (-2.0)
    loss = mpo_loss(_t(-1.0), _t(-2.0), _t(p_ref), torch.tensor([[-1.0, -3.0]], dtype=torch.float64), beta, tau)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    # [B] samples are used as they are
    loss_1d = mpo_loss(_t(-1.0), _t(-2.0), _t(p_ref), _t(-2.0), beta, tau)
    assert loss_1d.item() == pytest.approx(expected, abs=1e-12)


def test_pair_preference_prob() -> None:
    assert pair_preference_prob(_t(-1.0), _t(-1.0 - math.log(3.0))).item() == pytest.approx(0.75)


# ---------------------------------------------------------------- gradients vs finite differences


def test_gradients_match_finite_differences() -> None:
    generator = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return (3 * torch.randn(*shape, generator=generator, dtype=torch.float64)).requires_grad_()

    pc, pr, rc, rr = rand(5), rand(5), rand(5), rand(5)
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(*x, beta=0.3), (pc, pr, rc, rr))
    assert torch.autograd.gradcheck(lambda *x: dpo_loss(*x, beta=0.3, label_smoothing=0.2), (pc, pr, rc, rr))
    assert torch.autograd.gradcheck(lambda *x: ipo_loss(*x, beta=0.3), (pc, pr, rc, rr))
    ref_prob = torch.rand(5, generator=generator, dtype=torch.float64) * 0.9 + 0.05
    samples = rand(5, 3)
    assert torch.autograd.gradcheck(lambda a, b, s: mpo_loss(a, b, ref_prob, s, beta=0.4, tau=0.2), (pc, pr, samples))


# ---------------------------------------------------------------- TRL's own loss code


def _trl_loss(loss_type: str, beta: float, chosen_tokens: torch.Tensor, rejected_tokens: torch.Tensor,
              chosen_mask: torch.Tensor, rejected_mask: torch.Tensor,
              ref_chosen: torch.Tensor, ref_rejected: torch.Tensor) -> torch.Tensor:
    """Batch-mean loss from ``trl.DPOTrainer._compute_loss`` run on given per-token log-probs.

    ``_compute_loss`` is called unbound: ``self`` carries only the config attributes and metric sinks it reads,
    and ``model`` returns the given per-token log-probs (zero outside the completion, as TRL's fused head does).
    Reference log-probs enter through TRL's ``precompute_ref_logps`` path.
    """
    completion_mask = torch.cat([chosen_mask, rejected_mask])
    per_token_logps = torch.cat([chosen_tokens, rejected_tokens]) * completion_mask[:, 1:]
    n_rows, n_tokens = completion_mask.shape
    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t, gather=lambda t: t)
    trainer = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True), accelerator=accelerator, aux_loss_enabled=False, ld_alpha=None,
        precompute_ref_logps=True, f_divergence_type="reverse_kl", loss_types=[loss_type], loss_weights=[1.0],
        beta=beta, label_smoothing=0.0, use_weighting=False, _total_train_tokens=0, _tp_size=1,
        _metrics=collections.defaultdict(lambda: collections.defaultdict(list)),
    )
    zeros = torch.zeros(n_rows, n_tokens - 1)

    def model(**_: object) -> types.SimpleNamespace:
        return types.SimpleNamespace(log_probs=per_token_logps, entropy=zeros, mean_logits=zeros,
                                     is_top1=zeros.bool())

    inputs = {
        "input_ids": torch.zeros(n_rows, n_tokens, dtype=torch.long),
        "attention_mask": torch.ones(n_rows, n_tokens, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(trainer, model, inputs, False)  # type: ignore[arg-type]


@pytest.fixture
def token_logps() -> dict[str, torch.Tensor]:
    """Per-token log-probs of 6 pairs with 2 prompt tokens and 1..6 response tokens of varying length."""
    generator = torch.Generator().manual_seed(1)
    n_pairs, n_tokens = 6, 8
    lengths_chosen = torch.tensor([1, 2, 3, 4, 5, 6])
    lengths_rejected = torch.tensor([6, 1, 4, 2, 5, 3])
    positions = torch.arange(n_tokens)

    def mask(lengths: torch.Tensor) -> torch.Tensor:
        return ((positions >= 2) & (positions < 2 + lengths[:, None])).long()

    def logps() -> torch.Tensor:
        return -torch.rand(n_pairs, n_tokens - 1, generator=generator, dtype=torch.float64) * 4

    return {
        "chosen": logps().requires_grad_(), "rejected": logps().requires_grad_(),
        "chosen_mask": mask(lengths_chosen), "rejected_mask": mask(lengths_rejected),
        "ref_chosen": -torch.rand(n_pairs, generator=generator, dtype=torch.float64) * 10,
        "ref_rejected": -torch.rand(n_pairs, generator=generator, dtype=torch.float64) * 10,
    }


def _sequence_logps(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (tokens * mask[:, 1:]).sum(-1)


@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_equals_trl_sigmoid(token_logps: dict[str, torch.Tensor], beta: float) -> None:
    tl = token_logps
    trl_value = _trl_loss("sigmoid", beta, tl["chosen"], tl["rejected"], tl["chosen_mask"], tl["rejected_mask"],
                          tl["ref_chosen"], tl["ref_rejected"])
    ours = dpo_loss(_sequence_logps(tl["chosen"], tl["chosen_mask"]),
                    _sequence_logps(tl["rejected"], tl["rejected_mask"]), tl["ref_chosen"], tl["ref_rejected"], beta)
    assert ours.shape == (6,)
    assert abs(ours.mean().item() - trl_value.item()) <= 1e-6
    trl_grads = torch.autograd.grad(trl_value, (tl["chosen"], tl["rejected"]))
    our_grads = torch.autograd.grad(ours.mean(), (tl["chosen"], tl["rejected"]))
    for theirs, mine in zip(trl_grads, our_grads, strict=True):
        assert torch.allclose(theirs, mine, atol=1e-6, rtol=0)
    # per pair: TRL on a batch of one pair
    for i in range(6):
        one = slice(i, i + 1)
        single = _trl_loss("sigmoid", beta, tl["chosen"][one], tl["rejected"][one], tl["chosen_mask"][one],
                           tl["rejected_mask"][one], tl["ref_chosen"][one], tl["ref_rejected"][one])
        assert abs(single.item() - ours[i].item()) <= 1e-6


def test_dpo_label_smoothing_equals_trl_sigmoid_on_both_orders(token_logps: dict[str, torch.Tensor]) -> None:
    """cDPO(ε) = (1−ε)·TRL-sigmoid(y_w, y_l) + ε·TRL-sigmoid(y_l, y_w) (TRL 1.16's sigmoid has no ε)."""
    tl, beta, eps = token_logps, 0.3, 0.15
    forward = _trl_loss("sigmoid", beta, tl["chosen"], tl["rejected"], tl["chosen_mask"], tl["rejected_mask"],
                        tl["ref_chosen"], tl["ref_rejected"])
    flipped = _trl_loss("sigmoid", beta, tl["rejected"], tl["chosen"], tl["rejected_mask"], tl["chosen_mask"],
                        tl["ref_rejected"], tl["ref_chosen"])
    ours = dpo_loss(_sequence_logps(tl["chosen"], tl["chosen_mask"]),
                    _sequence_logps(tl["rejected"], tl["rejected_mask"]), tl["ref_chosen"], tl["ref_rejected"],
                    beta, label_smoothing=eps)
    assert abs(ours.mean().item() - ((1 - eps) * forward + eps * flipped).item()) <= 1e-6


@pytest.mark.parametrize("beta", [0.1, 0.5])
def test_ipo_equals_trl_ipo_with_length_normalised_logps(token_logps: dict[str, torch.Tensor], beta: float) -> None:
    """TRL's IPO divides log-ratios by response length; ours takes log-probs as given, so pass averages."""
    tl = token_logps
    trl_value = _trl_loss("ipo", beta, tl["chosen"], tl["rejected"], tl["chosen_mask"], tl["rejected_mask"],
                          tl["ref_chosen"], tl["ref_rejected"])
    len_c, len_r = tl["chosen_mask"].sum(-1), tl["rejected_mask"].sum(-1)
    ours = ipo_loss(_sequence_logps(tl["chosen"], tl["chosen_mask"]) / len_c,
                    _sequence_logps(tl["rejected"], tl["rejected_mask"]) / len_r,
                    tl["ref_chosen"] / len_c, tl["ref_rejected"] / len_r, beta)
    assert abs(ours.mean().item() - trl_value.item()) <= 1e-6
    trl_grads = torch.autograd.grad(trl_value, (tl["chosen"], tl["rejected"]))
    our_grads = torch.autograd.grad(ours.mean(), (tl["chosen"], tl["rejected"]))
    for theirs, mine in zip(trl_grads, our_grads, strict=True):
        assert torch.allclose(theirs, mine, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- extreme margins


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_finite_for_margins_up_to_1e4(name: str, dtype: torch.dtype) -> None:
    margins = [-1e4, -1e3, -30.0, 0.0, 30.0, 1e3, 1e4]
    chosen = torch.tensor(margins, dtype=dtype, requires_grad=True)
    rejected = torch.zeros(len(margins), dtype=dtype, requires_grad=True)
    zeros = torch.zeros(len(margins), dtype=dtype)
    if LOSSES[name].reference_free:
        ref_prob = torch.tensor([0.0, 1e-30, 0.1, 0.5, 0.9, 1.0 - 1e-9, 1.0], dtype=dtype)
        samples = torch.full((len(margins), 2), -1e4, dtype=dtype, requires_grad=True)
        loss = mpo_loss(chosen, rejected, ref_prob, samples, beta=0.1, tau=0.1)
        inputs: tuple[torch.Tensor, ...] = (chosen, rejected, samples)
    else:
        loss = LOSSES[name].fn(chosen, rejected, zeros, zeros, 0.1)
        inputs = (chosen, rejected)
    assert loss.dtype == dtype
    assert torch.isfinite(loss).all(), loss
    grads = torch.autograd.grad(loss.sum(), inputs)
    assert all(torch.isfinite(g).all() for g in grads), grads


def test_dpo_extreme_margins_have_the_right_limits() -> None:
    loss = dpo_loss(_t(1e4, -1e4, dtype=torch.float32), torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0.1)
    # −log σ(1000) ≈ 0 and −log σ(−1000) ≈ 1000
    assert loss[0].item() == pytest.approx(0.0, abs=1e-6)
    assert loss[1].item() == pytest.approx(1000.0, rel=1e-6)


# ---------------------------------------------------------------- MPO behaviour


def test_mpo_gradient_raises_preference_probability_when_labels_agree() -> None:
    """Starting at πθ = πref, a gradient step raises πp_θ(y_w≻y_l); the stationary point is logit p_ref + 1/β."""
    beta, ref_prob = 2.0, _t(0.6, 0.2, 0.5)
    ref_chosen = _t(-3.0, -5.0, -4.0)
    ref_rejected = ref_chosen - torch.logit(ref_prob)
    chosen = ref_chosen.clone().requires_grad_()
    rejected = ref_rejected.clone().requires_grad_()
    samples = torch.zeros(3, 1, dtype=torch.float64)
    loss = mpo_loss(chosen, rejected, ref_prob, samples, beta=beta, tau=0.0).sum()
    grad_chosen, grad_rejected = torch.autograd.grad(loss, (chosen, rejected))
    assert (grad_chosen < 0).all() and (grad_rejected > 0).all()
    # ∂L/∂d at d = logit p_ref is −p(1−p)
    assert torch.allclose(grad_chosen, -ref_prob * (1 - ref_prob))
    stepped = pair_preference_prob(chosen - 0.1 * grad_chosen, rejected - 0.1 * grad_rejected)
    assert (stepped > ref_prob).all()

    at_stationary = (ref_rejected + torch.logit(ref_prob) + 1.0 / beta).requires_grad_()
    loss = mpo_loss(at_stationary, ref_rejected, ref_prob, samples, beta=beta, tau=0.0).sum()
    (grad,) = torch.autograd.grad(loss, at_stationary)
    assert torch.allclose(grad, torch.zeros(3, dtype=torch.float64), atol=1e-12)


def test_mpo_point_wise_term_raises_reference_sample_logps() -> None:
    samples = torch.full((2, 4), -5.0, dtype=torch.float64, requires_grad=True)
    loss = mpo_loss(_t(-1.0, -1.0), _t(-2.0, -2.0), _t(0.5, 0.5), samples, beta=0.1, tau=0.3).sum()
    (grad,) = torch.autograd.grad(loss, samples)
    assert torch.allclose(grad, torch.full((2, 4), -0.3 / 4, dtype=torch.float64))


# ---------------------------------------------------------------- registry


def test_registry() -> None:
    assert {name: spec.reference_free for name, spec in LOSSES.items()} == {"dpo": False, "ipo": False, "mpo": True}
    assert get_loss("ipo").fn is ipo_loss
    with pytest.raises(ConfigError, match="train.loss.*'kto'"):
        get_loss("kto")


# ---------------------------------------------------------------- curvature (ADPO+'s weights)


def test_logistic_curvature_is_the_second_derivative_of_the_logistic_nll() -> None:
    margins = torch.linspace(-4, 4, 9, dtype=torch.float64)
    second_derivative = torch.func.vmap(torch.func.grad(torch.func.grad(lambda h: -torch.nn.functional.logsigmoid(h))))
    torch.testing.assert_close(logistic_curvature(margins), second_derivative(margins))


def test_logistic_curvature_stays_positive_for_confident_margins() -> None:
    """μ(1−μ) computed as 1 − σ(40) would round to 0 and block the pair; σ(h)σ(−h) keeps e^{−40}."""
    weights = logistic_curvature(torch.tensor([0.0, 40.0, -40.0], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([0.25, math.exp(-40.0), math.exp(-40.0)], dtype=torch.float64),
                               rtol=1e-12, atol=0.0)


def test_specs_carry_reference_curvature_and_pair_probability() -> None:
    """μ: σ(β·Δ) under DPO, σ(log π(y1) − log π(y2)) under MPO, 1/2 + β·Δ (IPO's least-squares fixed point) clipped."""
    logps = PairLogps(_t(-1.0, -2.0), _t(-3.0, -2.0), _t(-2.0, -2.0), _t(-2.0, -3.0))  # Δ = 2, −1
    train = TrainConfig(beta=0.1)
    assert [LOSSES[name].reference for name in ("dpo", "ipo", "mpo")] == ["logps", "logps", "samples"]
    assert [LOSSES[name].curvature for name in ("dpo", "ipo", "mpo")] == ["logistic", "constant", "logistic"]
    torch.testing.assert_close(get_loss("dpo").pair_prob(logps, train), torch.sigmoid(_t(0.2, -0.1)))
    torch.testing.assert_close(get_loss("mpo").pair_prob(logps, train), torch.sigmoid(_t(2.0, 0.0)))
    torch.testing.assert_close(get_loss("ipo").pair_prob(logps, TrainConfig(beta=0.4)), _t(1.0, 0.1))
    torch.testing.assert_close(get_loss("ipo").curvature_weights(_t(3.0, -1.0)), _t(1.0, 1.0))
    torch.testing.assert_close(get_loss("dpo").per_pair(logps, train), dpo_loss(*astuple(logps)[:4], beta=0.1))
