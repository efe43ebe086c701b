from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from jobs.cli import app
from system.config import SelectionConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]


def test_schema_is_json_with_field_descriptions() -> None:
    result = CliRunner().invoke(app, ["config", "--schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["properties"]["selection"]["$ref"] == "#/$defs/SelectionConfig"
    budget = schema["$defs"]["SelectionConfig"]["properties"]["budget"]
    assert budget["description"] == SelectionConfig.model_fields["budget"].description
    assert "per round" in budget["description"]
    assert (budget["type"], budget["minimum"], budget["default"]) == ("integer", 1, 8)


def test_markdown_is_the_reference_page() -> None:
    result = CliRunner().invoke(app, ["config", "--markdown"])
    assert result.exit_code == 0, result.output
    assert result.stdout == (REPO / "docs" / "config.md").read_text()


def test_prints_the_validated_config_with_overrides() -> None:
    result = CliRunner().invoke(app, ["config", "--config", str(REPO / "configs" / "tiny.yaml"), "--train.lr", "3e-4"])
    assert result.exit_code == 0, result.output
    config = config_from_dict(yaml.safe_load(result.stdout))
    tiny = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    assert config.train.lr == 3e-4
    assert config.selection.budget == tiny["selection"]["budget"]
    assert config.cluster.features.num_cpus == 0.5  # a default the file leaves out is filled in
