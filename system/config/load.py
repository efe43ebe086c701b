"""A config in and out: YAML plus dotted overrides → a validated :class:`Config`; a config → YAML text, or
flat ``section.key`` params for MLflow with the oracle token redacted."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import ValidationError

from system.config.oracle import MIN_TOKEN_CHARS
from system.config.root import Config
from system.errors import ConfigError


def overrides_from_args(args: Sequence[str]) -> list[str]:
    """Turn CLI tokens ``--train.lr 1e-4 --loop.rounds=3`` into ``["train.lr=1e-4", "loop.rounds=3"]``."""
    dotlist: list[str] = []
    tokens = list(args)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or "." not in token.split("=", 1)[0]:
            raise ConfigError(f"override {token!r}: expected --section.key VALUE or --section.key=VALUE")
        key = token[2:]
        if "=" in key:
            dotlist.append(key)
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ConfigError(f"override --{key}: missing value")
        dotlist.append(f"{key}={tokens[i + 1]}")
        i += 2
    return dotlist


def _format_validation_error(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    value = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(value, dict) else f" (got {value!r})"
    more = len(error.errors()) - 1
    suffix = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {message}{shown}{suffix}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def config_from_dict(data: dict[str, Any], source: str = "<dict>") -> Config:
    """Validate a plain nested mapping; ``source`` names it in error messages."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply dotted overrides.

    Args:
        path: YAML file whose top-level keys are config sections.
        overrides: ``section.key=value`` strings, values parsed as YAML scalars/lists.

    Raises:
        ConfigError: naming the file (or ``override``) and the key path of the first problem.
    """
    source = str(path) if path is not None else "<defaults>"
    data = _read_yaml(Path(path)) if path is not None else {}
    if overrides:
        try:
            merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(list(overrides)))
        except OmegaConfBaseException as exc:
            raise ConfigError(f"override {list(overrides)}: {exc}") from None
        data = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
        source = f"{source} + overrides"
    return config_from_dict(data, source)


def dump_config(config: Config) -> str:
    """The config as YAML text (what a run directory stores next to its checkpoints)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


REDACTED = "<redacted>"


def flatten_config(config: Config) -> dict[str, str]:
    """``{"train.lr": "0.0001", ...}`` for logging every setting as an MLflow param.

    The oracle token never becomes a param: a setting named like ``oracle.token_env`` (e.g.
    ``cluster.runtime_env.env_vars.ACTIVEALIGN_API_TOKEN``) or whose value contains that variable's
    token reads :data:`REDACTED`.
    """
    flat: dict[str, str] = {}
    token = os.environ.get(config.oracle.token_env, "")

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            secret = prefix.rsplit(".", 1)[-1] == config.oracle.token_env
            secret |= len(token) >= MIN_TOKEN_CHARS and token in str(value)
            flat[prefix] = REDACTED if secret else str(value)

    walk("", config.model_dump(mode="json"))
    return flat
