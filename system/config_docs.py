"""The configuration reference page, generated from the pydantic models of :mod:`system.config`.

``docs/config.md`` is :func:`config_markdown`'s output; regenerate it after changing a config field with
``activealign config --markdown > docs/config.md`` (a test fails while the page and the models disagree).
Each section (``model``, ``model.tiny``, ``train.deepspeed``, …) gets one table of its keys: key path,
type with its allowed range, default, and the field's description.
"""

from __future__ import annotations

import json
import types
from typing import Any, Literal, TypeGuard, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from system.config import Config

REGENERATE = "activealign config --markdown > docs/config.md"
BOUNDS = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
"""pydantic's bound constraints (``Field(ge=…)`` keeps an ``annotated_types.Ge`` in ``metadata``), as shown."""


def _is_section(annotation: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """A type as a YAML user reads it: ``int``, ``str | null``, ``"left" | "error"``, ``list[str]``."""
    origin = get_origin(annotation)
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in get_args(annotation))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in get_args(annotation))}]"
    if annotation is type(None):
        return "null"
    return "Any" if annotation is Any else str(annotation.__name__)


def field_type(field: FieldInfo) -> str:
    """The field's type as code followed by its bounds, e.g. ```float` ≥ 0, < 1``."""
    bounds = [
        f"{symbol} {getattr(item, attribute)}"
        for item in field.metadata
        for attribute, symbol in BOUNDS
        if getattr(item, attribute, None) is not None
    ]
    return " ".join([f"`{type_name(field.annotation)}`", ", ".join(bounds)]).strip()


def _cell(text: str) -> str:
    """Table-cell text: pipes escaped (also inside code spans, as GitHub tables require)."""
    return text.replace("|", "\\|")


def section_markdown(path: str, model: type[BaseModel], default: BaseModel, description: str) -> list[str]:
    """The heading, description and key table of the section at ``path``, then its nested sections' blocks.

    Args:
        path: dotted key path of the section (``train.deepspeed``).
        model: the section's pydantic model.
        default: the section's default value (defaults shown are this instance's, so a parent's override
            such as ``cluster.features.num_cpus: 0.5`` appears as it applies).
        description: the parent's description of this section.
    """
    lines = [f"## `{path}`", "", description, "", "| key | type | default | description |", "|---|---|---|---|"]
    nested: list[str] = []
    values = default.model_dump(mode="json")
    for name, field in model.model_fields.items():
        key = f"{path}.{name}"
        if _is_section(field.annotation):
            nested += section_markdown(key, field.annotation, getattr(default, name), field.description or "")
            continue
        shown_default = json.dumps(values[name], ensure_ascii=False)
        row = [f"`{key}`", field_type(field), f"`{shown_default}`", field.description or ""]
        lines.append("| " + " | ".join(_cell(cell) for cell in row) + " |")
    return [*lines, "", *nested]


def config_markdown(model: type[BaseModel] = Config) -> str:
    """The whole reference page: an introduction, then one table per section of ``model``."""
    default = model()
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the models in `system/config/` by `{REGENERATE}`; edit the field descriptions there, "
        "not this page.",
        "",
        "A config file is a YAML mapping of the sections below; any key can be overridden on the command line as "
        "`--section.key VALUE` (e.g. `--train.lr 1e-4`). Unknown keys, wrong types and values outside a key's "
        "range are errors naming the key path. `activealign config --schema` prints the same information as JSON "
        "Schema; `activealign config --config FILE` prints a file's validated values with every default filled in.",
        "",
    ]
    for name, field in model.model_fields.items():
        section = field.annotation
        assert _is_section(section), f"top-level key {name} is not a section"
        lines += section_markdown(name, section, getattr(default, name), field.description or "")
    while lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
