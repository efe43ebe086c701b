"""Typed configuration: nested pydantic models loaded from YAML with dotted overrides.

A config file is a YAML mapping whose top-level keys are the sections below. Loading merges
the file with overrides given as ``section.key=value`` (the CLI turns ``--train.lr 1e-4`` into
``train.lr=1e-4``) and validates the result: an unknown key, a wrong type or an out-of-range
value raises :class:`~system.errors.ConfigError` naming the key path and the file.

One module per section (``model``, ``lora``, ``generation``, ``features``, ``selection``, ``oracle``, ``train``,
``loop``, ``tracking``, ``cluster``), :mod:`system.config.root` for the whole :class:`Config` and every check that
reads more than one section, :mod:`system.config.load` for reading and writing a config. Import from here.
"""

from system.config.cluster import ClusterConfig, ResourceSpec, RetryConfig
from system.config.features import FeaturesConfig
from system.config.generation import GenerationConfig
from system.config.load import (
    REDACTED,
    config_from_dict,
    dump_config,
    flatten_config,
    load_config,
    overrides_from_args,
)
from system.config.loop import LoopConfig
from system.config.lora import LoraConfig
from system.config.model import ModelConfig, TinyModelConfig
from system.config.oracle import MIN_TOKEN_CHARS, HumanOracleConfig, OracleConfig
from system.config.root import Config
from system.config.section import DATASET_HINT, Section
from system.config.selection import SelectionConfig
from system.config.tracking import TrackingConfig
from system.config.train import DeepSpeedConfig, SftWarmupConfig, TrainConfig

__all__ = [
    "DATASET_HINT", "MIN_TOKEN_CHARS", "REDACTED", "ClusterConfig", "Config", "DeepSpeedConfig", "FeaturesConfig",
    "GenerationConfig", "HumanOracleConfig", "LoopConfig", "LoraConfig", "ModelConfig", "OracleConfig",
    "ResourceSpec", "RetryConfig", "Section", "SelectionConfig", "SftWarmupConfig", "TinyModelConfig",
    "TrackingConfig", "TrainConfig", "config_from_dict", "dump_config", "flatten_config", "load_config",
    "overrides_from_args",
]
