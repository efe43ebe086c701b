"""A loss added in one place: a test-only loss registered from this module runs through config validation,
training and ADPO+'s weighting, with no other file knowing its name.

``test_sharp_dpo`` is −log σ(2β·Δ), written out here: DPO at twice the β, so a run with it at β must equal a DPO
run at 2β — an independent check that every caller asks the spec (inputs, margin, curvature) rather than a name.
``test_squared`` has constant curvature, which ADPO+ must refuse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from system.config import Config, FeaturesConfig, LoraConfig, ModelConfig, TrainConfig, load_config, overrides_from_args
from system.errors import ConfigError
from system.features import embedding_features, strategy_rows
from system.losses import LOSSES, LossSpec, PairLogps, register_loss
from system.models.loading import load_policy, reference_mode
from system.models.logprobs import encode_sequences, sequence_logps
from system.selection import get_strategy
from system.training import train_preferences
from system.types import CandidatePair, PreferencePair
from tests.system.models.conftest import perturbed_lora_policy
from tests.system.training.conftest import training_config


def sharp_dpo_loss(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float) -> Tensor:
    """−log σ(h), h = 2β·Δ, Δ = (log πθ − log πref)(y_w) − (log πθ − log πref)(y_l); ``[B]``."""
    return -F.logsigmoid(2.0 * beta * ((chosen - ref_chosen) - (rejected - ref_rejected)))


def _sharp_margin(logps: PairLogps, train: TrainConfig) -> Tensor:
    ref_chosen, ref_rejected = logps.reference_logps()
    return 2.0 * train.beta * ((logps.chosen - ref_chosen) - (logps.rejected - ref_rejected))


SHARP = LossSpec(
    "test_sharp_dpo", sharp_dpo_loss,
    lambda logps, train: sharp_dpo_loss(logps.chosen, logps.rejected, *logps.reference_logps(), train.beta),
    _sharp_margin, reference="logps", curvature="logistic",
)
SQUARED = LossSpec(
    "test_squared", sharp_dpo_loss, lambda logps, train: (_sharp_margin(logps, train) - 0.5) ** 2, _sharp_margin,
    reference="logps", curvature="constant",
)


@pytest.fixture(autouse=True)
def added_losses() -> Iterator[None]:
    """The two losses registered as a user would (one call each), and removed again after the test."""
    for spec in (SHARP, SQUARED):
        register_loss(spec)
    yield
    for spec in (SHARP, SQUARED):
        del LOSSES[spec.name]


def test_config_accepts_the_added_loss_and_refuses_adpo_plus_under_constant_curvature() -> None:
    config = load_config(None, overrides_from_args(["--train.loss", "test_sharp_dpo", "--selection.strategy",
                                                    "adpo_plus"]))
    assert config.train.loss == "test_sharp_dpo"
    with pytest.raises(ConfigError, match=r"adpo_plus weights pairs by μ\(1−μ\).*train.loss=test_squared") as info:
        load_config(None, ["train.loss=test_squared", "selection.strategy=adpo_plus"])
    assert "\n" not in str(info.value)
    assert load_config(None, ["train.loss=test_squared", "selection.strategy=adpo"]).train.loss == "test_squared"
    with pytest.raises(ConfigError, match="unknown loss 'kto'.*test_sharp_dpo"):
        load_config(None, ["train.loss=kto"])


def test_training_with_the_added_loss_equals_dpo_at_twice_the_beta(
    model_cfg: ModelConfig, lora_cfg: LoraConfig, train_pairs: list[PreferencePair], tmp_path: Path
) -> None:
    adapters = {}
    metrics = {}
    for loss, beta in (("test_sharp_dpo", 0.05), ("dpo", 0.1)):
        cfg = training_config(model_cfg, lora_cfg, loss=loss, beta=beta, epochs=2)
        model, tokenizer = load_policy(model_cfg, lora_cfg)
        result = train_preferences(model, tokenizer, train_pairs, cfg, tmp_path / loss)
        adapters[loss] = {name: param.detach().clone() for name, param in model.named_parameters()
                          if param.requires_grad}
        metrics[loss] = result.epoch_metrics
    assert metrics["test_sharp_dpo"][-1]["loss"] < metrics["test_sharp_dpo"][0]["loss"]  # it trained
    for ours, dpo in zip(metrics["test_sharp_dpo"], metrics["dpo"], strict=True):
        assert ours["loss"] == pytest.approx(dpo["loss"], abs=1e-6)
        # the logged rewards are β·log-ratios, so the added loss's are half of DPO's at 2β
        assert ours["rewards/margin"] == pytest.approx(dpo["rewards/margin"] / 2, abs=1e-6)
    for name, weight in adapters["dpo"].items():
        torch.testing.assert_close(adapters["test_sharp_dpo"][name], weight, rtol=1e-5, atol=1e-6)


def test_adpo_plus_weights_pairs_by_the_added_losss_curvature(
    model_cfg: ModelConfig, lora_cfg: LoraConfig, train_pairs: list[PreferencePair]
) -> None:
    """Rows √w·φ with w = σ(h)σ(−h), h = 2β·Δ computed here from one-sequence log-probs (adapters off for πref)."""
    model, tokenizer = perturbed_lora_policy(model_cfg, lora_cfg, seed=5)
    beta = 0.5
    cfg = Config.model_validate({
        **training_config(model_cfg, lora_cfg, loss="test_sharp_dpo", beta=beta).model_dump(),
        "features": FeaturesConfig(batch_size=3).model_dump(),
    })
    pairs = [CandidatePair(pair.pair_id or str(i), str(i), pair.prompt, pair.chosen, pair.rejected)
             for i, pair in enumerate(train_pairs[:5])]

    def logp(prompt: object, response: str) -> float:
        with torch.no_grad():
            return float(sequence_logps(model, encode_sequences(tokenizer, [prompt], [response], model_cfg))[0])

    margins = []
    for pair in pairs:
        policy = [logp(pair.prompt, y) for y in (pair.response_1, pair.response_2)]
        with reference_mode(model):
            reference = [logp(pair.prompt, y) for y in (pair.response_1, pair.response_2)]
        margins.append(2 * beta * ((policy[0] - reference[0]) - (policy[1] - reference[1])))
    h = torch.tensor(margins, dtype=torch.float64)
    assert h.abs().max() > 0.05  # the perturbed adapters make the weights differ from 1/4
    weights = torch.sigmoid(h) * torch.sigmoid(-h)
    expected = embedding_features(model, tokenizer, pairs, cfg).double() * weights.sqrt().unsqueeze(-1)
    rows = strategy_rows(get_strategy("adpo_plus"), model, tokenizer, pairs, cfg)
    torch.testing.assert_close(rows.double(), expected, rtol=1e-4, atol=1e-5)
