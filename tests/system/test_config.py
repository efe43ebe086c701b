from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from system.config import Config, flatten_config, load_config, overrides_from_args
from system.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tiny.yaml", "cluster-7b.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(REPO / "configs" / name)
    assert isinstance(config, Config)


def test_cluster_7b_matches_seed_001_setting() -> None:
    config = load_config(REPO / "configs" / "cluster-7b.yaml")
    assert (config.lora.r, config.lora.alpha) == (128, 512)
    assert config.features.projection_dim == 8192
    assert (config.loop.prompts_per_round, config.generation.responses_per_prompt) == (1000, 3)
    assert config.selection.budget == 50
    assert (config.train.loss, config.train.epochs, config.train.lr) == ("dpo", 4, 1e-4)


def test_dotted_cli_overrides() -> None:
    dotlist = overrides_from_args(["--train.lr", "1e-4", "--loop.rounds=3", "--lora.target_modules", "[q_proj]"])
    config = load_config(REPO / "configs" / "tiny.yaml", dotlist)
    assert config.train.lr == pytest.approx(1e-4)
    assert config.loop.rounds == 3
    assert config.lora.target_modules == ["q_proj"]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train: {lrr: 0.1}\n", "train.lrr: unknown key"),
        ("trian: {lr: 0.1}\n", "trian: unknown key"),
        ("train: {lr: -1}\n", "train.lr: Input should be greater than 0"),
        ("loop: {rounds: many}\n", "loop.rounds: Input should be a valid integer"),
        ("lora: {dropout: 1.5}\n", "lora.dropout"),
        ("model: {tiny: {hidden_size: 32, num_attention_heads: 2}}\n", "head_dim"),
        ("oracle: {kind: programmatic}\n", "oracle.callable"),
        ("train: [1, 2\n", "line"),
    ],
)
def test_bad_config_names_key_and_file(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert needle in message
    assert "\n" not in message


def test_bad_override_is_named() -> None:
    with pytest.raises(ConfigError, match="train.lrr: unknown key"):
        load_config(None, overrides_from_args(["--train.lrr", "1"]))
    with pytest.raises(ConfigError, match="missing value"):
        overrides_from_args(["--train.lr"])
    with pytest.raises(ConfigError, match="expected --section.key"):
        overrides_from_args(["lr=1"])


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_flatten_has_every_leaf() -> None:
    flat = flatten_config(load_config(REPO / "configs" / "tiny.yaml"))
    raw = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())  # independent read of the same file
    assert flat["train.lr"] == str(raw["train"]["lr"])
    assert flat["model.tiny.hidden_size"] == str(raw["model"]["tiny"]["hidden_size"])
