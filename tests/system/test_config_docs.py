from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from system.config import Config, Section
from system.config_docs import REGENERATE, config_markdown

REPO = Path(__file__).resolve().parents[2]


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str | None]]:
    """(key path, description) of every field of ``model`` and of the sections nested in it."""
    for name, field in model.model_fields.items():
        yield f"{prefix}{name}", field.description
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from _fields(field.annotation, f"{prefix}{name}.")


def test_every_config_field_has_a_description() -> None:
    fields = dict(_fields(Config))
    assert {"selection.budget", "model.tiny.vocab_size", "train.deepspeed.stage", "cluster.oracle.num_gpus"} <= set(
        fields
    )
    undocumented = [key for key, description in fields.items() if not (description or "").strip()]
    assert undocumented == []


def test_reference_page_matches_the_models() -> None:
    page = (REPO / "docs" / "config.md").read_text()
    assert page == config_markdown(), f"docs/config.md is stale: regenerate it with `{REGENERATE}`"


class _Inner(Section):
    size: int = Field(3, ge=1, le=9, description="How big.")
    tags: list[str] = Field(default_factory=list, description="Labels.")


class _Outer(Section):
    mode: Literal["a", "b"] = Field("a", description="Which one (a | b).")
    path: str | None = Field(None, gt=0, description="Where.")
    rate: float = Field(1e-4, description="How fast.")
    inner: _Inner = Field(_Inner(size=5), description="The inner part.")


class _Root(Section):
    outer: _Outer = Field(_Outer(), description="The outer part.")


def test_markdown_of_a_small_model() -> None:
    expected = "\n".join([
        "| key | type | default | description |",
        "|---|---|---|---|",
        '| `outer.mode` | `"a" \\| "b"` | `"a"` | Which one (a \\| b). |',
        "| `outer.path` | `str \\| null` > 0 | `null` | Where. |",
        "| `outer.rate` | `float` | `0.0001` | How fast. |",
        "",
        "## `outer.inner`",
        "",
        "The inner part.",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
        "| `outer.inner.size` | `int` ≥ 1, ≤ 9 | `5` | How big. |",
        "| `outer.inner.tags` | `list[str]` | `[]` | Labels. |",
    ]) + "\n"
    page = config_markdown(_Root)
    assert page.startswith("# Configuration reference\n")
    assert page.endswith("## `outer`\n\nThe outer part.\n\n" + expected)
